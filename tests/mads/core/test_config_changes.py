"""Configuration changes between starts reach the audit trail, by key name only."""

from __future__ import annotations

import json
from pathlib import Path

from mads.core.audit_trail import AuditTrail
from mads.core.config_changes import FINGERPRINT_FILE, detect
from mads.core.settings import load_settings
from mads.host import Host


def test_first_start_then_only_changed_keys(tmp_path: Path) -> None:
    first = detect(tmp_path, {"gateway": {"port": 1, "host": "127.0.0.1"}})
    assert [(c.section, c.keys) for c in first] == [("gateway", ["host", "port"])]
    assert (tmp_path / FINGERPRINT_FILE).stat().st_mode & 0o777 == 0o600
    assert detect(tmp_path, {"gateway": {"port": 1, "host": "127.0.0.1"}}) == []
    changed = detect(tmp_path, {"gateway": {"port": 2, "host": "127.0.0.1"}, "fiedler": {"retries": 1}})
    assert sorted((c.section, c.keys, c.action) for c in changed) == [
        ("fiedler", ["retries"], "set"),
        ("gateway", ["port"], "set"),
    ]


def test_values_are_never_written(tmp_path: Path) -> None:
    detect(tmp_path, {"fiedler": {"api_key": "sk-do-not-store-4f1e"}})
    assert "sk-do-not-store-4f1e" not in (tmp_path / FINGERPRINT_FILE).read_text()


async def test_a_changed_setting_is_audited_by_mcnamara(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def start_with(retries: int) -> None:
        settings = load_settings(
            None,
            environ={},
            known_mads={"mcnamara", "fiedler"},
            overrides={
                "ecosystem": {"data_dir": str(data_dir), "mads": ["mcnamara"]},
                "fiedler": {"retries": retries},
            },
        )
        host = Host(settings)
        await host.start()
        await host.stop()

    await start_with(1)
    await start_with(1)
    await start_with(3)
    async with AuditTrail(data_dir / "mcnamara" / "audit.db") as trail:
        records = [r for r in await trail.query(event_types=["config.change"]) if "fiedler" in r.action]
    assert len(records) == 2, "first start and the change, not the unchanged restart"
    assert "retries" in json.dumps(records[-1].details)
