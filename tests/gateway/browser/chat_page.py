"""The chat page as a person uses it, in Playwright terms: sign in, send, read the bubbles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.support.ecosystem import Running
from tests.support.llm_server import ScriptedLLM

BUBBLES = "#messages article.message"


@dataclass
class ChatPage:
    page: Page
    eco: Running
    llm: ScriptedLLM
    login_link: str
    problems: list[str] = field(default_factory=list)
    """Uncaught exceptions on the page (any fails the test)."""
    console: list[str] = field(default_factory=list)
    """Everything the page logged, kept with a failing test's screenshot."""

    async def sign_in(self) -> None:
        """Open the first-run login link, as a new user does, and land on the chat signed in."""
        await self.page.goto(self.login_link)
        await expect(self.page.locator("#who")).to_have_text("Signed in as admin (operator)")
        await expect(self.page.locator("#connection-status")).to_have_text("Not connected")

    async def new_conversation(self) -> None:
        await self.page.get_by_role("button", name="+ New conversation").click()
        await expect(self.page.locator("#connection-status")).to_have_text("Connected")

    async def send(self, text: str) -> Locator:
        """Type and send ``text``; return the bubble that will hold the reply."""
        before = await self.page.locator(BUBBLES).count()
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")
        mine = self.page.locator(BUBBLES).nth(before)
        await expect(mine.locator(".author")).to_have_text("You")
        await expect(mine.locator(".message-body")).to_have_text(text)
        return self.page.locator(BUBBLES).nth(before + 1)

    async def finished(self, bubble: Locator) -> Locator:
        """Wait until the reply in ``bubble`` is complete (no longer busy)."""
        await expect(bubble).not_to_have_attribute("aria-busy", "true")
        await expect(self.page.locator(f"{BUBBLES}[aria-busy=true]")).to_have_count(0)
        return bubble

    async def bubbles(self) -> list[dict[str, Any]]:
        """Every message bubble: author, body text, and whether it is shown as an error."""
        return await self.page.eval_on_selector_all(
            BUBBLES,
            """nodes => nodes.map(n => ({
                author: n.querySelector('.author').textContent,
                text: n.querySelector('.message-body').innerText,
                error: n.classList.contains('error'),
            }))""",
        )

    async def sidebar_entry(self) -> Locator:
        return self.page.locator("#conversation-list button[aria-current=true]")
