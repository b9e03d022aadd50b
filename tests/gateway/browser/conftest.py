"""The chat page in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

Playwright's Python package carries its own driver; it drives the system browser through
``executable_path``, so nothing is downloaded. Each test gets the real ecosystem (with
McNamara, as every gateway test) on an ephemeral port, the first-run login link it printed,
and a fresh browser context. A failing test leaves a full-page screenshot and the page's
console under ``test-artifacts/browser/`` (gitignored). Without Chromium the tests skip,
except under ``CI=true``, where they fail: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.gateway.browser.chat_page import ChatPage
from tests.gateway.conftest import GATEWAY_MADS
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM
from tests.support.sandbox_ecosystem import sandbox_ecosystem, sandbox_settings
from tests.support.wasm_cache import CompiledCache, shared_compiled_cache

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "browser"
LINK = re.compile(r"(?P<link>https?://\S+/login\S*)")
EXPECT_TIMEOUT_MS = 20_000
"""How long an expectation waits for the page (a deadline, not a pace: a passing one returns at once)."""
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        message = "the browser tests need Chromium: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def chat(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    llm_server: ScriptedLLM,
    capsys: pytest.CaptureFixture[str],
    browser: Browser,
) -> AsyncIterator[ChatPage]:
    """A fresh ecosystem, its first-run login link, and a page in a new browser context (not signed in)."""
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    async with running(settings) as eco, open_chat(request, eco, llm_server, capsys, browser) as page:
        yield page


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> CompiledCache:
    return shared_compiled_cache(tmp_path_factory)


@pytest.fixture
async def sandbox_chat(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    llm_server: ScriptedLLM,
    capsys: pytest.CaptureFixture[str],
    browser: Browser,
    compiled_cache: CompiledCache,
) -> AsyncIterator[ChatPage]:
    """The same with the sandbox's MADs, Hopper and Playfair (the session's compiled module, so no compile here)."""
    settings = sandbox_settings(tmp_path / "data", llm_server.base_url, mads=[*GATEWAY_MADS, "hopper", "playfair"])
    async with (
        sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco,
        open_chat(request, eco, llm_server, capsys, browser) as page,
    ):
        yield page


@contextlib.asynccontextmanager
async def open_chat(
    request: pytest.FixtureRequest,
    eco: Running,
    llm_server: ScriptedLLM,
    capsys: pytest.CaptureFixture[str],
    browser: Browser,
) -> AsyncIterator[ChatPage]:
    found = LINK.search(capsys.readouterr().out)
    assert found, "the first run printed no login link"
    context = await browser.new_context()
    page = await context.new_page()
    chat = ChatPage(page=page, eco=eco, llm=llm_server, login_link=found["link"])
    page.on("pageerror", lambda error: chat.problems.append(f"uncaught: {error}"))
    page.on("console", lambda message: chat.console.append(f"{message.type}: {message.text}"))
    try:
        yield chat
    finally:
        reports = request.node.stash.get(REPORTS, {})
        if any(r.failed for r in reports.values()):
            await _keep_artifacts(chat, request.node.name)
        await context.close()
    assert not chat.problems, f"the page threw: {chat.problems}"


async def _keep_artifacts(chat: ChatPage, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if not chat.page.is_closed():
        await chat.page.screenshot(path=ARTIFACTS / f"{stem}.png", full_page=True)
    (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(chat.console + chat.problems) + "\n")
