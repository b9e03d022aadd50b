"""The OpenAI-compatible door: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Every MAD with an Imperator (it accepts prose) is a model. A request's messages become
one turn for that MAD on behalf of the token's principal — exactly what a message
posted in the chat page is: same authentication, rate limits, audit, budgets and
cancellation, stored by Rogers like any conversation. The conversation is named by the
``X-Conversation-Id`` header (the response always carries it, and the body's
``conversation_id``); without the header each request starts a new conversation, and
the earlier messages the client sent are given to the MAD as context. Usage is the
turn's: every LLM call the message caused, whatever MAD asked (Fiedler's ``turn_usage``).

Streaming follows the turn's deltas on the conversation's stream (only this turn's, only
the answering MAD's text) and ends with whatever part of the final reply was not
streamed, so the chunks add up to the reply; when the MAD's LLM wrote something before
calling a tool, that comes first and the answer follows after a blank line. Errors before
the stream starts are HTTP errors in the OpenAI shape; a failure after it started is one ``data: {"error": …}``
event, which the ``openai`` client raises as an ``APIError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bus.envelope import Envelope, ErrorInfo, FieldError, Principal
from bus.ids import new_id
from bus.topics import StreamDelta, stream_topic
from gateway.errors import ApiError, openai_error_body
from gateway.mad_client import ROGERS, MadClient
from gateway.openai_wire import ChatCompletionRequest, Usage, chunk, completion, model_entry
from gateway.principal import principal_of, user_address
from gateway.redaction import REDACTOR_KEY
from gateway.schemas import ConversationPath, MessageResult, read_body
from gateway.state import GatewayState, state_of
from mads.core import names

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

CONVERSATION_HEADER = "X-Conversation-Id"
TITLE_CHARS = 80


def chat_models(state: GatewayState) -> list[str]:
    """The MADs that can be talked to: running, with an Imperator (they accept prose)."""
    return sorted(
        e.mad
        for e in state.directory.entries()
        if e.alive and e.address == e.mad and bool(e.card.get("accepts_prose", True))
    )


def resolve_model(state: GatewayState, model: str) -> str:
    available = chat_models(state)
    if model not in available:
        reason = f"no running MAD with an Imperator is called {model!r}; models: {', '.join(available) or 'none'}"
        raise ApiError(404, "model_not_found", reason, [FieldError(field="body.model", reason=reason)])
    return model


def header_conversation(request: web.Request) -> str | None:
    value = request.headers.get(CONVERSATION_HEADER)
    if value is None:
        return None
    try:
        return ConversationPath(conversation_id=value).conversation_id
    except ValidationError:
        reason = "must be a conversation id (letters, digits, '_' or '-', at most 64)"
        raise ApiError(
            422,
            "invalid_request",
            f"{CONVERSATION_HEADER}: {reason}",
            [FieldError(field=CONVERSATION_HEADER, reason=reason)],
        ) from None


async def open_conversation(
    client: MadClient, request: web.Request, body: ChatCompletionRequest, principal: Principal
) -> tuple[str, bool]:
    """The conversation this request belongs to, and whether it continues an existing one."""
    given = header_conversation(request)
    if given is not None:
        conversation = await client.conversation(given, principal=principal)
        if isinstance(conversation, dict) and conversation.get("owner") != principal.name:
            raise ApiError(
                403, "forbidden", "this conversation is another person's: an operator may read it, not write in it"
            )
        return given, True
    title = (body.user or body.messages[-1].text().strip())[:TITLE_CHARS]
    created = await client.call(
        ROGERS, "create_conversation", {"created_by": user_address(principal), "title": title}, principal=principal
    )
    assert isinstance(created, dict)
    return str(created["id"]), False


async def turn_usage(client: MadClient, turn: str, principal: Principal) -> Usage:
    """What the turn used, from Fiedler; zero if Fiedler is not running here (no LLM was called)."""
    try:
        totals = await client.call(names.FIEDLER, "turn_usage", {"turn": turn}, principal=principal)
    except ApiError as exc:
        if exc.status != 503:
            raise
        return Usage()
    return Usage.from_totals(totals)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    created = int(time.time())
    data = [model_entry(name, created) for name in chat_models(state_of(request))]
    return web.json_response({"object": "list", "data": data})


@routes.get("/v1/models/{model}")
async def get_model(request: web.Request) -> web.Response:
    name = resolve_model(state_of(request), request.match_info["model"])
    return web.json_response(model_entry(name, int(time.time())))


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_body(request, ChatCompletionRequest)
    state, principal = state_of(request), principal_of(request)
    model = resolve_model(state, body.model)
    conversation_id, continuing = await open_conversation(state.client, request, body, principal)
    turn = new_id()
    text = body.turn_text(continuing=continuing)
    if body.stream:
        return await _stream(request, state, body, model, conversation_id, turn, text, principal)
    result = await state.client.send_message(conversation_id, text, principal=principal, mad=model, message_id=turn)
    usage = await turn_usage(state.client, turn, principal)
    answer = completion(
        f"chatcmpl-{turn}",
        model,
        result.reply.text,
        usage,
        conversation_id=conversation_id,
        participants=result.participants,
    )
    return web.json_response(answer, headers={CONVERSATION_HEADER: conversation_id})


STEP_BREAK = None
"""Queued when the answering MAD ran tools: the text before it belonged to an LLM step that was not the answer."""


class TurnDeltas:
    """Bus handler: the answering MAD's text deltas of one turn, and its tool steps, queued without waiting."""

    def __init__(self, turn: str, mad: str) -> None:
        self.turn = turn
        self.mad = mad
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def on_stream(self, envelope: Envelope) -> None:
        if envelope.turn != self.turn:
            return
        for value in envelope.data():
            try:
                delta = StreamDelta.model_validate(value)
            except ValidationError:
                continue
            if delta.mad != self.mad:
                continue
            if delta.event == "delta" and delta.text:
                self.queue.put_nowait(delta.text)
            elif delta.event in ("tool", "handoff"):
                self.queue.put_nowait(STEP_BREAK)


@dataclass
class Streamed:
    """What was written: ``step`` is the current LLM step's text, ``earlier`` whether an earlier step wrote."""

    step: str = ""
    earlier: bool = False
    separator_due: bool = False

    def piece(self, text: str) -> str:
        """The chunk to write for ``text`` (a step after a written one starts after a blank line)."""
        self.step += text
        if self.separator_due:
            self.separator_due = False
            return f"\n\n{text}"
        return text

    def next_step(self) -> None:
        if self.step:
            self.earlier, self.separator_due, self.step = True, True, ""

    def rest_of(self, final: str) -> str:
        """What to write after the deltas so the client ends with the whole reply, once."""
        if final.startswith(self.step):
            rest = final[len(self.step) :]
            return f"\n\n{rest}" if rest and not self.step and self.earlier else rest
        return f"\n\n{final}"


async def _stream(
    request: web.Request,
    state: GatewayState,
    body: ChatCompletionRequest,
    model: str,
    conversation_id: str,
    turn: str,
    text: str,
    principal: Principal,
) -> web.StreamResponse:
    redact = request.app[REDACTOR_KEY].redact
    completion_id, created = f"chatcmpl-{turn}", int(time.time())
    deltas = TurnDeltas(turn, model)
    subscription = await state.bus.subscribe(
        stream_topic(conversation_id), deltas.on_stream, group=f"sse:{turn}", concurrency=1
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", CONVERSATION_HEADER: conversation_id, "X-Accel-Buffering": "no"}
    )

    async def send(payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else redact(json.dumps(payload))
        await response.write(f"data: {data}\n\n".encode())

    posting = asyncio.create_task(
        state.client.send_message(conversation_id, text, principal=principal, mad=model, message_id=turn)
    )
    try:
        await response.prepare(request)
        await send(chunk(completion_id, model, created, {"role": "assistant", "content": ""}))
        streamed = await _forward(deltas, posting, lambda piece: send(chunk(completion_id, model, created, piece)))
        try:
            result: MessageResult = posting.result()
        except ApiError as exc:
            await send(openai_error_body(exc.status, exc.info))
            return response
        except Exception:
            reference = new_id()
            log.exception("streamed chat completion failed (reference %s)", reference)
            info = ErrorInfo(code="internal_error", message=f"internal error (reference {reference})")
            await send(openai_error_body(500, info))
            return response
        rest = streamed.rest_of(result.reply.text)
        if rest:
            await send(chunk(completion_id, model, created, {"content": rest}))
        await send(chunk(completion_id, model, created, {}, finish_reason="stop"))
        if body.include_usage:
            usage = await turn_usage(state.client, turn, principal)
            await send(chunk(completion_id, model, created, None, usage=usage))
        await send("[DONE]")
        return response
    finally:
        if not posting.done():
            posting.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await posting
        await subscription.cancel()


async def _forward(deltas: TurnDeltas, posting: asyncio.Task[MessageResult], write: Any) -> Streamed:
    """Write the turn's deltas until its reply is in (then those already queued); returns what was written."""
    streamed = Streamed()

    async def take(item: str | None) -> None:
        if item is STEP_BREAK:
            streamed.next_step()
        else:
            await write({"content": streamed.piece(item)})

    while not posting.done():
        getting = asyncio.ensure_future(deltas.queue.get())
        done, _ = await asyncio.wait({getting, posting}, return_when=asyncio.FIRST_COMPLETED)
        if getting in done:
            await take(getting.result())
        else:
            getting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getting
    while not deltas.queue.empty():
        await take(deltas.queue.get_nowait())
    return streamed
