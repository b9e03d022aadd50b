"""Detect configuration changes between starts and announce them for the audit trail.

The ecosystem reads its configuration once, at start-up, so a change means "this
start runs with different settings than the last one". The host fingerprints
every key of every section (SHA-256 of its canonical JSON — values are never
stored or published, only key names) in ``<data_dir>/config-fingerprint.json``
and publishes one ``events.config_change`` per changed section; McNamara writes
them to the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from bus.topics import ConfigChange

FINGERPRINT_FILE = "config-fingerprint.json"


def fingerprint(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Per section, per key: a hash of the value (enough to see a change, useless to read it)."""
    return {
        section: {
            key: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
            for key, value in values.items()
        }
        for section, values in sections.items()
    }


def diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[ConfigChange]:
    changes = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section, {}), after.get(section, {})
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if not changed:
            continue
        removed = [k for k in changed if k not in new]
        changes.append(
            ConfigChange(
                actor="operator",
                section=section,
                keys=changed,
                action="delete" if removed and len(removed) == len(changed) else "set",
                summary=f"{len(changed)} key(s) changed since the previous start",
            )
        )
    return changes


def detect(data_dir: Path, sections: dict[str, dict[str, Any]]) -> list[ConfigChange]:
    """Compare with the previous start's fingerprint, save the new one, return what changed.

    The very first start is reported too (every key is new): the audit trail then
    records the configuration the ecosystem began with.
    """
    path = data_dir / FINGERPRINT_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}
    after = fingerprint(sections)
    changes = diff(before if isinstance(before, dict) else {}, after)
    if changes or not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(after, handle, sort_keys=True)
        os.replace(tmp, path)
    return changes


def sections_of(settings_dump: dict[str, JsonValue]) -> dict[str, dict[str, Any]]:
    """Flatten ``Settings.model_dump`` into named sections (MAD sections included)."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in settings_dump.items():
        if name == "mad_sections" and isinstance(value, dict):
            for mad, values in value.items():
                if isinstance(values, dict):
                    sections[mad] = dict(values)
        elif isinstance(value, dict):
            sections[name] = dict(value)
    return sections
