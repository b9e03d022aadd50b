"""Issue 11 point 4 in the browser: an operator reviews a regeneration run waiting for approval — the diff, the
architectural report, the confined test results and the cost — and approves it; the running ecosystem then
serves McNamara's new tool.

The ecosystem is a real ``python ecosystem.py`` started from a clone of the source (so the approval merges into
the tree it runs from), driven in headless Chromium. Screenshots of the page are kept in ``test-artifacts/browser/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Response, expect

from tests.gateway.browser.conftest import ARTIFACTS
from tests.support.llm_server import ScriptedLLM
from tests.support.regeneration import (
    PING_TESTS,
    clone_source,
    ecosystem_child,
    edit_requirement,
    head,
    ping_change,
    run_ended,
    source_origin,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_origin(tmp_path_factory.mktemp("ecosystem-source"))


async def test_an_operator_reviews_and_approves_a_run_on_the_page(
    tmp_path: Path, llm_server: ScriptedLLM, browser: Browser, origin: Path
) -> None:
    source = clone_source(origin, tmp_path / "source")
    edit_requirement(source)
    config = write_config(tmp_path / "ecosystem.toml", llm_server.base_url)
    async with ecosystem_child(source, config, tmp_path / "data", tmp_path / "ecosystem.log") as eco:
        llm_server.script(ping_change(source))
        before = await eco.instances()

        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))

        def answered(response: Response) -> None:
            """Every request of the page answers — but the alias refused on purpose, and the browser's own
            /favicon.ico probe (no icon is served)."""
            refused_on_purpose = response.request.method == "POST" and response.status == 422
            if response.status >= 400 and not refused_on_purpose and not response.url.endswith("/favicon.ico"):
                problems.append(f"{response.status} {response.url}")

        page.on("response", answered)
        try:
            await page.goto(eco.login_link)
            await expect(page.locator("#who")).to_have_text("Signed in as admin (operator)")
            await page.get_by_role("link", name="Regeneration").click()  # shown to operators on the chat page
            await expect(page).to_have_url(eco.at("/regeneration"))
            await expect(page.locator("#who")).to_have_text("Signed in as admin (operator)")
            await expect(page.locator("#waiting-empty")).to_be_visible()

            # Start a run from the page: a drifting alias is refused with the reason, the pinned model starts.
            await page.get_by_label("MAD", exact=True).select_option("mcnamara")
            await page.get_by_label("Model (Fiedler name)").fill("scripted")
            await page.get_by_label("Exact model id").fill("openai/gpt-4o")
            await page.get_by_label("Tests (paths, space-separated)").fill(" ".join(PING_TESTS))
            await page.get_by_role("button", name="Start").click()
            await expect(page.locator("#regen-error")).to_contain_text("Could not start: body.model_id: model:")
            await page.get_by_label("Exact model id").fill("openai/scripted")
            await page.get_by_role("button", name="Start").click()
            await expect(page.locator("#regen-status")).to_contain_text("Started run ")
            run_id = (await page.locator("#run-rows tr").first.get_attribute("data-run")) or ""
            assert (await run_ended(eco, run_id))["state"] == "awaiting_approval"  # the page polls meanwhile
            card = page.locator(f'article.run-card[data-run="{run_id}"]')
            await expect(card.get_by_role("heading", level=3)).to_have_text(f"mcnamara — run {run_id}")
            await expect(card.locator("pre.diff")).to_contain_text("+    async def ping(self, args: NoArgs)")
            await expect(card.locator("pre.diff .add").first).to_be_visible()
            await expect(card).to_contain_text("added: ping")
            await expect(card).to_contain_text("modified mads/mcnamara/mad.py")
            await expect(card.locator("section.tests .ok")).to_have_text(["passed", "passed"])
            await expect(card).to_contain_text("$0.0000 in 1 LLM call")
            await expect(card).to_contain_text("scripted = openai/scripted")
            await expect(page.locator(f'#run-rows tr[data-run="{run_id}"]')).to_contain_text("waiting")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "regeneration-waiting.png", full_page=True)

            async with page.expect_request(f"**/api/regeneration/runs/{run_id}/approve") as sent:
                await card.get_by_role("button", name="Approve and reload").click()
            assert (await sent.value).headers.get("x-csrf-token"), "the approval carries the session's CSRF token"
            merged_line = page.locator("#regen-status")
            await expect(merged_line).to_contain_text(f"Approved mcnamara ({run_id}): merged")
            await expect(merged_line).to_contain_text("reloaded mcnamara")
            await expect(page.locator("#waiting-empty")).to_be_visible()
            await expect(page.locator(f'#run-rows tr[data-run="{run_id}"]')).to_contain_text("approved")
            await page.screenshot(path=ARTIFACTS / "regeneration-approved.png", full_page=True)
        finally:
            await context.close()
        assert not problems, problems

        assert (source / "mads/mcnamara/mad.py").read_text().count("async def ping") == 1
        assert head(source) != ""
        assert "ping" in await eco.tools("mcnamara")
        answered = await eco.command("/mcnamara ping {}")
        assert answered["data"] == [{"answer": "pong"}], answered
        after = await eco.instances()
        assert after["mcnamara"] != before["mcnamara"]
        assert {m: after[m] for m in ("rogers", "fiedler", "grace")} == {
            m: before[m] for m in ("rogers", "fiedler", "grace")
        }
