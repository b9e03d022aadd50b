"""What the LLM is given and what it must answer: requirements, principles, the MAD's code and tests.

The prompt is built from the run's worktree at its base commit (the approved tree), so it is the
same on a resumed run; its SHA-256 is recorded in the audit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from regeneration.worktree import own_paths

MAX_FILE_CHARS = 60_000

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "maxLength": 2000},
        "files": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": ["string", "null"]},
        },
        "declared": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["message", "files"],
}

INSTRUCTIONS = """You regenerate one MAD of the mad-ecosystem from its requirements document and the principles.
Answer with ONE JSON object and nothing else:
{"outcome": "proposed", "message": "<commit message>", "files": {"<path>": "<whole new content>" or null to delete},
 "declared": ["<any path outside the MAD's own paths you touch>"]}
The MAD's own paths are: %(own)s. Touch anything else only if you declare it, and never make a MAD import another
MAD or infrastructure import a MAD. Your change is checked by code, then the MAD's tests and the architecture tests
run confined (no network, the worktree the only writable place). If the MAD's stored data changes shape, add a new
numbered migration (`NNN_name.sql` or a `Migration(...)`), never edit an applied one: it is rehearsed on a copy of the
data before a person reviews it. If a previous attempt failed, the reason follows."""


def _read(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if len(text) <= MAX_FILE_CHARS else text[:MAX_FILE_CHARS] + "\n… (cut)"


def build_messages(tree: Path, mad: str, failures: list[str]) -> list[dict[str, str]]:
    """Chat messages for one proposal (blocking file reads: call in a thread)."""
    own = own_paths(mad)
    documents = [f"## requirements/{mad}.md\n{_read(tree / f'requirements/{mad}.md')}"]
    documents += [f"## {p.relative_to(tree)}\n{_read(p)}" for p in sorted((tree / "principles").glob("*.md"))]
    code = []
    for prefix in own[:2]:
        for path in sorted((tree / prefix).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                code.append(f"## {path.relative_to(tree)}\n{_read(path)}")
    user = "# Current code and tests\n" + "\n\n".join(code)
    if failures:
        user += "\n\n# Previous attempts failed\n" + "\n\n".join(failures)
    return [
        {"role": "system", "content": INSTRUCTIONS % {"own": ", ".join(own)} + "\n\n" + "\n\n".join(documents)},
        {"role": "user", "content": user},
    ]


def prompt_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
