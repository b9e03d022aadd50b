"""``python ecosystem.py tokens …`` as a real subprocess, against a gateway on the same data directory."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"^mad_[A-Za-z0-9_\-]{43}$")
TIMEOUT = 60.0


async def tokens(data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "ecosystem.py"),
        "tokens",
        *args,
        "--data-dir",
        str(data_dir),
        cwd=data_dir.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_create_list_and_revoke_through_the_cli(
    tmp_path: Path, llm_server: ScriptedLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    code, out, err = await tokens(data_dir, "create", "alice", "--role", "operator", "--expires-days", "30")
    assert code == 0, err
    token = out.strip()
    assert TOKEN.match(token), out
    assert "shown once" in err and token not in err

    db = (data_dir / "gateway" / "auth.db").read_bytes()
    assert token.encode() not in db and token[4:].encode() not in db, "only a keyed hash is stored"
    assert (data_dir / "gateway" / "token_pepper").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "gateway" / "auth.db").stat().st_mode & 0o777 == 0o600

    code, out, err = await tokens(data_dir, "list", "--json")
    assert code == 0, err
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["principal"] == "alice" and listed["role"] == "operator" and listed["status"] == "active"
    assert listed["expires_at"] is not None and token not in out

    settings = ecosystem_settings(data_dir, llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco, aiohttp.ClientSession() as http:
        assert "First run" not in capsys.readouterr().out, "a store with principals needs no first-run link"
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(eco.at("/api/session"), headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["principal"] == "alice"
        code, out, err = await tokens(data_dir, "revoke", "alice")
        assert code == 0, err
        assert re.fullmatch(r"revoked tok_[0-9a-f]{12} \(alice\)\n", out), out
        async with http.get(eco.at("/api/session"), headers=headers) as response:
            assert response.status == 401, "revocation from the CLI applies to the running gateway at once"

    code, out, _ = await tokens(data_dir, "list")
    assert re.search(r"alice\s+operator\s+revoked", out), out
    code, _, err = await tokens(data_dir, "revoke", "nobody")
    assert code == 1 and "no unrevoked token" in err
    code, _, err = await tokens(data_dir, "create", "bad name!")
    assert code == 2 and "name:" in err
    code, _, err = await tokens(data_dir, "create", "bob", "--expires-days", "0")
    assert code == 2 and "expires-days" in err

    records = (data_dir / "mcnamara" / "audit.db").exists()
    assert records, "token creation and revocation are on McNamara's audit trail"
