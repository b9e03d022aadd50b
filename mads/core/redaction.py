"""Redaction of known secret values from text, logs and JSON-like data.

The host makes one :class:`SecretRedactor` per process (by default :data:`REDACTOR`) and passes it
to the bus, every MAD (``MadContext.redactor``) and the gateway. Every secret Turing writes or
reads is registered in it, so later output that happens to
carry it (a log line, an error, a prompt) can be scrubbed. For each value we also match its
common encodings: JSON-escaped, URL-encoded (quote and quote_plus), and, when the value is
at least 8 characters, standard and URL-safe base64 (padded and unpadded). Base64 is only
caught when the value was encoded on its own; a secret embedded mid-way in a larger base64
blob shifts alignment and cannot be recognised by value.

Values shorter than MIN_SECRET_LEN (6) are ignored: short strings such as "true" or "1234"
would redact unrelated text everywhere and give a false sense of protection.

Matching uses regexes built from prefix tries (shared prefixes factored out), so a search
costs roughly text length x trie depth rather than x number of secrets. New values go into
a small new regex that is merged with older ones LSM-style (a level merges into the one
before it once it is at least half its size), so registering one more secret does not
recompile everything: O(log n) levels, amortised O(log n) rebuild work per value.
Redaction picks the leftmost, then longest, match across levels, so a secret that contains
another is still redacted whole. The registry necessarily keeps the plaintext values in
memory for the life of the process.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretBytes, SecretStr

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 6
_MIN_B64_LEN = 8


def encodings(value: str) -> set[str]:
    """The raw value plus the encodings we scrub; empty if the value is too short."""
    if len(value) < MIN_SECRET_LEN:
        return set()
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {quote(value, safe=""), quote_plus(value, safe="")}
    if len(value) >= _MIN_B64_LEN:
        raw = value.encode("utf-8")
        for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = enc.decode("ascii")
            forms |= {text, text.rstrip("=")}
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


_MAX_NESTING = 80


def _trie_regex(words: Iterable[str]) -> str:
    """One alternation with shared prefixes factored out; longer matches win."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _node_regex(root, 0)


def _node_regex(node: dict[str, dict], depth: int) -> str:
    if depth > _MAX_NESTING:
        raise RecursionError("trie too deep for one regex")
    branches: list[str] = []
    for ch in sorted(k for k in node if k):
        run = [ch]
        child = node[ch]
        while len(child) == 1 and "" not in child:
            ((nxt, child),) = child.items()
            run.append(nxt)
        branches.append(re.escape("".join(run)) + _node_regex(child, depth + 1))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def _compile(forms: frozenset[str]) -> re.Pattern[str]:
    """Trie regex; for pathological nesting (secrets that prefix each other in long chains)
    fall back to a flat longest-first alternation, which is slower but equally correct."""
    try:
        return re.compile(_trie_regex(forms))
    except RecursionError:
        return re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))))


class _Level:
    __slots__ = ("forms", "pattern")

    def __init__(self, forms: frozenset[str]) -> None:
        self.forms = forms
        self.pattern = _compile(forms)


class SecretRedactor:
    """Thread-safe registry of secret values; matchers are rebuilt lazily on the next redact."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pending: set[str] = set()
        self._levels: tuple[_Level, ...] = ()

    def register(self, value: str) -> None:
        if len(value) < MIN_SECRET_LEN:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            self._pending |= encodings(value)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pending.clear()
            self._levels = ()

    def __len__(self) -> int:
        return len(self._values)

    def _matchers(self) -> tuple[_Level, ...]:
        if not self._pending:
            return self._levels
        with self._lock:
            if self._pending:
                levels = [*self._levels, _Level(frozenset(self._pending))]
                self._pending.clear()
                while len(levels) >= 2 and 2 * len(levels[-1].forms) >= len(levels[-2].forms):
                    newer, older = levels.pop(), levels.pop()
                    levels.append(_Level(older.forms | newer.forms))
                self._levels = tuple(levels)
            return self._levels

    def redact(self, text: str) -> str:
        """`text` with every registered value (and encoding) replaced by [REDACTED]."""
        levels = self._matchers()
        if not levels or not text:
            return text
        if len(levels) == 1:
            return levels[0].pattern.sub(REDACTED, text)
        out: list[str] = []
        pos = 0
        found = [level.pattern.search(text) for level in levels]
        while True:
            best: re.Match[str] | None = None
            for i, m in enumerate(found):
                if m is not None and m.start() < pos:
                    m = found[i] = levels[i].pattern.search(text, pos)
                if m is not None and (
                    best is None or m.start() < best.start() or (m.start() == best.start() and m.end() > best.end())
                ):
                    best = m
            if best is None:
                break
            out += (text[pos : best.start()], REDACTED)
            pos = best.end()
        out.append(text[pos:])
        return "".join(out)

    def redact_structure(self, obj: object) -> object:
        """Redact strings anywhere in dicts (keys and values), lists, tuples and sets."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, SecretStr | SecretBytes):
            return REDACTED
        if isinstance(obj, BaseModel):
            return self.redact_structure(obj.model_dump(mode="json"))
        if isinstance(obj, dict):
            return {self.redact_structure(k): self.redact_structure(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple | set | frozenset):
            return type(obj)(self.redact_structure(v) for v in obj)
        return obj


REDACTOR = SecretRedactor()
"""The process's default redactor: the one the host hands to its bus, its MADs and the gateway
unless told otherwise, and the one the log handlers use. It is only ever added to, never swapped."""


class RedactingFilter(logging.Filter):
    """Scrub registered secrets from a record's message, args and traceback text.

    Attach it to handlers: a filter on a logger does not see records propagated from its
    children.
    """

    def __init__(self, redactor: SecretRedactor | None = None, name: str = "") -> None:
        super().__init__(name)
        self._redactor = redactor if redactor is not None else REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        r = self._redactor
        record.msg = r.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact(record.stack_info)
        return True
