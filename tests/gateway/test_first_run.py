"""First run: an empty auth store prints a one-time login link (a single-use code in the fragment) and, separately,
the admin's long-lived API token."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.gateway.conftest import GATEWAY_MADS, assert_error
from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"^First run: sign in as admin \(operator\) at (?P<link>\S+) \(one-time link", re.MULTILINE)
TOKEN = re.compile(r"^API token for admin .*: (?P<token>mad_\S+)$", re.MULTILINE)


async def test_first_run_prints_a_one_time_link_and_the_token_separately_and_never_again(
    tmp_path: Path, llm_server: ScriptedLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco:
        out = capsys.readouterr().out
        [link] = LINK.findall(out)
        [token] = TOKEN.findall(out)
        assert len(out.strip().splitlines()) == 2, out
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}/" == eco.url and parts.path == "/login" and not parts.query
        assert parts.fragment.startswith("code="), "the code travels in the fragment only"
        code = parts.fragment.removeprefix("code=")
        assert token not in link and not code.startswith("mad_"), "the link does not carry the token"

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(link) as response:
                assert response.status == 200 and code not in await response.text()
            async with browser.post(eco.at("/api/session"), json={"code": code}) as response:
                assert response.status == 200
                session = await response.json()
            assert session["principal"] == "admin" and session["role"] == "operator"
            async with browser.get(eco.at("/api/alerts")) as response:
                assert response.status == 200

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as second:
            async with second.post(eco.at("/api/session"), json={"code": code}) as response:
                assert response.status == 401, "the link signs in once"
                assert_error(await response.json(), "invalid_code")
                assert "mad_session" not in response.cookies
            async with second.get(eco.at("/api/alerts"), headers={"Authorization": f"Bearer {code}"}) as response:
                assert response.status == 401, "a login code is not a bearer token"

        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as api,
            api.get(eco.at("/api/session")) as response,
        ):
            assert response.status == 200, "the long-lived token is for the API"
            assert (await response.json())["principal"] == "admin"

    async with running(settings):
        assert "First run" not in capsys.readouterr().out


async def test_login_takes_exactly_one_of_token_and_code(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco, aiohttp.ClientSession() as anonymous:
        for body in ({}, {"token": eco.token, "code": "x" * 43}):
            async with anonymous.post(eco.at("/api/session"), json=body) as response:
                assert response.status == 422, body
                assert_error(await response.json(), "invalid_request", "body")
        async with anonymous.post(eco.at("/api/session"), json={"code": "n" * 43}) as response:
            assert response.status == 401
            assert_error(await response.json(), "invalid_code")


async def test_login_page_gives_the_readme_command_for_a_token(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    command = "uv run python ecosystem.py tokens create NAME"
    assert command in (ROOT / "README.md").read_text(encoding="utf-8")
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco, aiohttp.ClientSession() as anonymous:
        async with anonymous.get(eco.at("/login")) as response:
            page = await response.text()
        assert f"<code>{command}</code>" in page
