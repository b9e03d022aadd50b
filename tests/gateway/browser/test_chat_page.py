"""Issue 12 point 3, issue 9 items 18-19: the chat page driven in headless Chromium like a person would."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from playwright.async_api import expect

from bus.envelope import CommandPart, Envelope, Kind, Principal, deadline_in
from bus.ids import new_id
from tests.gateway.browser.chat_page import BUBBLES, ChatPage
from tests.support.llm_server import RecordedRequest, Reply, ServerError, ToolCall, Turn

STREAMED = "Streaming arrives word by word, so a person sees the answer grow before it is complete."

RECORD_BODY_CHANGES = """() => {
    window.__seen = [];
    const log = document.getElementById('messages');
    new MutationObserver(() => {
        const live = log.querySelector('article.message[aria-busy=true] .message-body');
        if (live) window.__seen.push(live.textContent);
    }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


RECORD_PROGRESS = """() => {
    window.__progress = [];
    const log = document.getElementById('messages');
    new MutationObserver(() => {
        const line = log.querySelector('article.message[aria-busy=true] .progress');
        if (line && window.__progress.at(-1) !== line.textContent) window.__progress.push(line.textContent);
    }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


async def test_sign_in_with_the_login_link_then_sign_out(chat: ChatPage) -> None:
    await chat.sign_in()
    assert "token=" not in chat.page.url, "the login link's secret is wiped from the address bar"
    await chat.page.get_by_role("button", name="Sign out").click()
    await expect(chat.page).to_have_url(re.compile(r"/login$"))
    await chat.page.goto(chat.eco.at("/"))
    await expect(chat.page).to_have_url(re.compile(r"/login$"))  # the session is gone, not just the page


async def test_a_command_answers_and_prose_streams_in(chat: ChatPage) -> None:
    await chat.sign_in()
    await chat.new_conversation()

    reply = await chat.finished(await chat.send("/rogers stats {}"))
    await expect(reply.locator(".author")).to_have_text("grace")
    await expect(reply.locator(".message-body")).to_contain_text('"schema_version"')
    await expect(reply.locator(".badges")).to_contain_text("rogers")

    await chat.page.evaluate(RECORD_BODY_CHANGES)
    chat.llm.script(Reply(text=STREAMED, chunk_delay=0.02))  # chunks paced by the scripted server
    reply = await chat.finished(await chat.send("Tell me how replies arrive."))
    await expect(reply.locator(".message-body")).to_have_text(STREAMED)
    seen = [text for text in await chat.page.evaluate("window.__seen") if text]
    partial = [text for text in seen if text != STREAMED]
    assert partial, f"the reply appeared in one piece: {seen}"
    assert all(STREAMED.startswith(text) for text in partial), partial
    assert len(set(partial)) > 1, f"the text did not grow while streaming: {partial}"


async def test_an_error_reply_is_shown_as_an_error_also_after_reload(chat: ChatPage) -> None:
    await chat.sign_in()
    await chat.new_conversation()
    chat.llm.script(ServerError(message="provider exploded (scripted)"))
    reply = await chat.finished(await chat.send("This one fails."))
    await expect(reply).to_have_class(re.compile(r"\berror\b"))
    await expect(reply.locator(".message-body")).to_contain_text("the LLM call failed")

    await chat.page.reload()
    await expect(chat.page.locator(BUBBLES)).to_have_count(2)
    await expect(chat.page.locator("#composer-error")).to_be_hidden()
    after = chat.page.locator(BUBBLES).nth(1)
    await expect(after).to_have_class(re.compile(r"\berror\b"))
    await expect(after.locator(".message-body")).to_contain_text("the LLM call failed")


async def test_reload_shows_the_same_history(chat: ChatPage) -> None:
    """Commands, a handoff (messages between MADs), an error and an unknown MAD: the same bubbles after reload."""
    await chat.sign_in()
    await chat.new_conversation()
    await chat.finished(await chat.send("/rogers stats {}"))
    chat.llm.script(
        ToolCall(name="handoff", arguments={"mad": "rogers", "request": "How many conversations are there?"}),
        Reply(text="There is one conversation."),
        Reply(text="Rogers says there is one conversation."),
    )
    await chat.finished(await chat.send("How many conversations do I have?"))
    chat.llm.script(ServerError())
    await chat.finished(await chat.send("And this fails."))
    await chat.finished(await chat.send("/nosuchmad foo"))
    before = await chat.bubbles()
    assert [b["author"] for b in before] == ["You", "grace"] * 4
    assert all(b["text"].strip() for b in before), before
    entry = await chat.sidebar_entry()
    # Counted as drawn: not Grace's talk with other MADs.
    await expect(entry.locator(".meta")).to_have_text(re.compile(rf"^{len(before)} messages · "))
    await run_tool_directly(chat, "fiedler", "models")

    await chat.page.reload()
    await expect(chat.page.locator(BUBBLES)).to_have_count(len(before))
    await expect(chat.page.locator("#composer-error")).to_be_hidden()
    after = await chat.bubbles()
    assert [(b["author"], b["error"]) for b in after] == [(b["author"], b["error"]) for b in before]
    for was, now in zip(before, after, strict=True):
        assert now["text"].strip() and now["text"].split("\n")[0] == was["text"].split("\n")[0], (was, now)
    assert [b["error"] for b in after] == [False, False, False, False, False, True, False, True]

    await expect(chat.page.locator("#participants")).not_to_contain_text("nosuchmad")


async def run_tool_directly(chat: ChatPage, mad: str, tool: str) -> None:
    """A person's tool call straight to a MAD in the open conversation (as an API client does, not through Grace):
    stored by Rogers, never drawn in the chat (live or reloaded), where it would be an empty "You" bubble and an
    empty bubble from that MAD."""
    cid = chat.page.url.rsplit("/", 1)[-1]
    principal = Principal(kind="operator", name="admin")
    request = Envelope(
        sender="user.admin",
        recipient=mad,
        kind=Kind.REQUEST,
        conversation_id=cid,
        principal=principal,
        deadline=deadline_in(10),
        content=[CommandPart(tool=tool)],
    )
    bus = chat.eco.host.bus
    reply = await bus.request(request)
    assert reply.error is None and reply.text() == "", reply
    sync = request.model_copy(update={"id": new_id(), "recipient": "rogers", "content": [CommandPart(tool="sync")]})
    assert (await bus.request(sync)).error is None  # stored before the page reloads


async def test_long_work_shows_progress_and_never_an_empty_bubble(chat: ChatPage) -> None:
    """Grace thinking, then a handoff to Rogers whose own LLM call is still running: the bubble says so."""
    await chat.sign_in()
    await chat.new_conversation()
    gates = [asyncio.Event(), asyncio.Event()]
    turns: list[tuple[asyncio.Event | None, Turn]] = [
        (gates[0], ToolCall(name="handoff", arguments={"mad": "rogers", "request": "Look this up."})),
        (gates[1], Reply(text="Rogers looked it up.")),
        (None, Reply(text="Done: Rogers looked it up.")),
    ]

    async def held(_: RecordedRequest) -> Turn:
        gate, turn = turns.pop(0)
        if gate is not None:
            await gate.wait()  # the LLM is still working until the test has looked at the page
        return turn

    chat.llm.respond_with(held)
    reply = await chat.send("Think about this for a while.")
    await expect(reply).to_have_attribute("aria-busy", "true")
    progress = reply.locator(".progress")
    await expect(progress).to_have_text("grace is working on it…")
    assert (await reply.inner_text()).strip(), "the bubble waiting for a reply is empty"
    gates[0].set()
    await expect(progress).to_have_text("rogers is working on it…")
    await expect(reply.locator(".badges")).to_contain_text("→ rogers")
    gates[1].set()
    await chat.finished(reply)
    await expect(reply.locator(".message-body")).to_have_text("Done: Rogers looked it up.")
    await expect(progress).to_have_count(0)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session's first sandbox user compiles the runtime: ~90 s of CPU, more when loaded
async def test_a_sandbox_run_shows_its_progress(sandbox_chat: ChatPage) -> None:
    chat = sandbox_chat
    await chat.sign_in()
    await chat.new_conversation()
    await chat.page.evaluate(RECORD_PROGRESS)
    reply = await chat.finished(await chat.send('/hopper run_python {"code": "print(6 * 7)"}'))
    await expect(reply.locator(".message-body")).to_contain_text("42")
    await expect(reply.locator(".progress")).to_have_count(0)
    seen = await chat.page.evaluate("window.__progress")
    assert "hopper.run_python is running…" in seen, seen


DRAWN = "() => { const i = document.querySelector('.artifacts img'); return i && i.complete && i.naturalWidth > 100 }"
"""The chart's image has loaded from the gateway and decoded (a broken image has naturalWidth 0)."""


@pytest.mark.timeout(900)  # the session's first sandbox user compiles the runtime
async def test_a_chart_is_shown_inline_and_again_after_reload(sandbox_chat: ChatPage) -> None:
    chat = sandbox_chat
    await chat.sign_in()
    await chat.new_conversation()
    request = {"kind": "bar", "data": {"columns": {"month": ["Jan", "Feb"], "n": [3, 5]}}, "x": "month", "y": ["n"]}
    reply = await chat.finished(await chat.send(f"/playfair chart {json.dumps(request)}"))
    image = reply.locator(".artifacts img")
    await expect(image).to_have_attribute("alt", "bar-chart.png")
    await chat.page.wait_for_function(DRAWN)
    await chat.page.reload()
    await expect(chat.page.locator(".artifacts img")).to_have_count(1)
    await chat.page.wait_for_function(DRAWN)
