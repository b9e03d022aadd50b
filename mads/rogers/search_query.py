"""Turn what a person (or an LLM) types into a safe FTS5 query.

FTS5 has its own query language (``AND``, ``NEAR(``, ``col:``, ``^``, parentheses),
so raw text fails with syntax errors or means something unintended. Here every word
becomes a quoted string — FTS5 cannot read a quoted string as syntax — and only two
intents survive: ``"a phrase"`` in balanced double quotes and a ``prefix*``.
"""

from __future__ import annotations

import re

_TERM = re.compile(r'"([^"]*)"|(\w+)(\*?)')
_WORD = re.compile(r"\w+")


def to_fts_query(text: str) -> str:
    """All terms must match (FTS5's implicit AND); empty when ``text`` has no word at all."""
    terms: list[str] = []
    for match in _TERM.finditer(text):
        phrase, word, star = match.groups()
        if phrase is not None:
            words = _WORD.findall(phrase)
            if words:
                terms.append('"' + " ".join(words) + '"')
        else:
            terms.append(f'"{word}"{"*" if star else ""}')
    return " ".join(terms)
