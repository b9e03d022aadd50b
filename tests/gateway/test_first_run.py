"""First run: an empty auth store prints one login link (token in the fragment) that signs the admin in."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

LINK = re.compile(r"^First run: sign in as admin \(operator\) at (?P<link>\S+)$", re.MULTILINE)


async def test_first_run_prints_one_login_link_that_works_and_never_again(
    tmp_path: Path, llm_server: ScriptedLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco:
        out = capsys.readouterr().out
        [link] = LINK.findall(out)
        assert len(out.strip().splitlines()) == 1, out
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}/" == eco.url and parts.path == "/login" and not parts.query
        assert parts.fragment.startswith("token=mad_"), "the token travels in the fragment only"
        token = parts.fragment.removeprefix("token=")

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(link) as response:
                assert response.status == 200 and token not in await response.text()
            async with browser.post(eco.at("/api/session"), json={"token": token}) as response:
                assert response.status == 200
                session = await response.json()
            assert session["principal"] == "admin" and session["role"] == "operator"
            async with browser.get(eco.at("/api/alerts")) as response:
                assert response.status == 200

    async with running(settings):
        assert "First run" not in capsys.readouterr().out
