"""A scripted OpenAI-compatible chat server on loopback: the project's test double for LLMs.

Why a real HTTP server instead of litellm's ``mock_response``: the code under test must exercise the
same wire path as production (litellm -> openai SDK -> httpx -> HTTP), including retries, streaming
parsers and error mapping. Tests script the answers, then assert on what was actually sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
TRANSCRIPTION_PATH = "/v1/audio/transcriptions"


class Usage(BaseModel):
    """Token counts reported to the client; used to test cost accounting."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class _TurnBase(BaseModel):
    """Fields every scripted turn shares: targeting, pacing and a usage override."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, description="Answer only requests for this model (as sent on the wire, no 'openai/')."
    )
    times: int | None = Field(
        default=1, ge=1, description="How many requests this turn answers; None = every matching request."
    )
    delay: float = Field(default=0.0, ge=0, description="Seconds to wait before answering (slowness).")
    chunk_delay: float = Field(default=0.0, ge=0, description="Seconds between streamed chunks.")
    usage: Usage | None = Field(default=None, description="Override the word-count usage.")


class Reply(_TurnBase):
    """An assistant text answer."""

    kind: Literal["reply"] = "reply"
    text: str
    finish_reason: str = "stop"


class ToolCall(_TurnBase):
    """One assistant tool call. ``arguments`` as a str is sent verbatim, so it can be invalid JSON.

    A call to a tool the request did not offer is just ``ToolCall(name="not_offered")``.
    """

    kind: Literal["tool_call"] = "tool_call"
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        """The wire form: OpenAI carries arguments as a JSON-encoded string."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class ToolCalls(_TurnBase):
    """Several parallel tool calls in one assistant message, optionally with text."""

    kind: Literal["tool_calls"] = "tool_calls"
    calls: list[ToolCall] = Field(min_length=1)
    text: str | None = None

    @model_validator(mode="after")
    def _nested_calls_carry_no_turn_fields(self) -> Self:
        for i, call in enumerate(self.calls):
            for field in ("model", "delay", "chunk_delay", "usage"):
                if call.model_fields_set & {field}:
                    raise ValueError(f"calls[{i}].{field}: set it on the ToolCalls turn, not on a call")
        return self


class RateLimit(_TurnBase):
    """HTTP 429 with Retry-After (litellm raises RateLimitError)."""

    kind: Literal["rate_limit"] = "rate_limit"
    retry_after: float | None = Field(default=1.0, ge=0)
    message: str = "Rate limit reached (scripted)"


class ServerError(_TurnBase):
    """An HTTP error status with an OpenAI-style error body (500 by default)."""

    kind: Literal["server_error"] = "server_error"
    status: int = Field(default=500, ge=400, le=599)
    message: str = "Internal server error (scripted)"


class InvalidJSON(_TurnBase):
    """HTTP 200 with a body that is not JSON, labelled application/json."""

    kind: Literal["invalid_json"] = "invalid_json"
    body: str = '{"id": "chatcmpl-broken", "choices": ['


class Hang(_TurnBase):
    """Never answer; the client must time out. Released when the server closes."""

    kind: Literal["hang"] = "hang"


class StreamCut(_TurnBase):
    """Start answering, then drop the connection: after ``after_chunks`` content chunks when
    streaming, or half-way through the JSON body otherwise."""

    kind: Literal["stream_cut"] = "stream_cut"
    text: str = "this answer will be cut off before it ends"
    after_chunks: int = Field(default=2, ge=0)


Turn = Annotated[
    Reply | ToolCall | ToolCalls | RateLimit | ServerError | InvalidJSON | Hang | StreamCut,
    Field(discriminator="kind"),
]
Answer = Reply | ToolCall | ToolCalls | StreamCut
"""Turns that produce a (possibly truncated) completion body."""
TURNS: TypeAdapter[list[Turn]] = TypeAdapter(list[Turn])


class RecordedRequest(BaseModel):
    """One request as received, so tests assert on what was really sent."""

    model_config = ConfigDict(frozen=True)

    method: str
    path: str
    headers: dict[str, str] = Field(description="Lower-cased header names.")
    raw_body: str
    body: dict[str, Any] | None = Field(description="Parsed JSON object, None when it was not one.")

    @property
    def model(self) -> str | None:
        return self.body.get("model") if self.body else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or []) if self.body else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools") or []) if self.body else []

    @property
    def stream(self) -> bool:
        return bool(self.body and self.body.get("stream"))

    @property
    def last_user_text(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""

    @property
    def prompt_text(self) -> str:
        """All message text joined; scan it for secrets that must never reach a model."""
        return "\n".join(message_text(m) for m in self.messages)


Responder = Callable[[RecordedRequest], "Turn | Awaitable[Turn]"]


class Transcript(BaseModel):
    """The text a transcription request gets back."""

    model_config = ConfigDict(extra="forbid")

    text: str


class RecordedTranscription(BaseModel):
    """One ``POST /v1/audio/transcriptions`` as received (multipart: the file and the form fields)."""

    model_config = ConfigDict(frozen=True)

    headers: dict[str, str] = Field(description="Lower-cased header names.")
    model: str | None
    filename: str | None
    content_type: str | None
    audio: bytes
    fields: dict[str, str] = Field(description="The other form fields (language, response_format…).")


def message_text(message: dict[str, Any]) -> str:
    """Text of one chat message: plain content, text parts, and any tool-call payloads."""
    content = message.get("content")
    pieces: list[str] = []
    if isinstance(content, str):
        pieces.append(content)
    elif isinstance(content, list):
        pieces.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        pieces.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return " ".join(p for p in pieces if p)


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def echo_last_user(request: RecordedRequest) -> Turn:
    """A ready-made responder: repeat the last user message."""
    return Reply(text=request.last_user_text)


def _completion_tokens(turn: Answer) -> int:
    if isinstance(turn, Reply | StreamCut):
        return count_tokens(turn.text)
    calls = turn.calls if isinstance(turn, ToolCalls) else [turn]
    text = turn.text if isinstance(turn, ToolCalls) and turn.text else ""
    return count_tokens(text) + sum(count_tokens(f"{c.name} {c.arguments_json()}") for c in calls)


def _split_words(text: str) -> list[str]:
    """Stream pieces whose concatenation is exactly ``text``."""
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    return pieces


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _ScriptedTurn:
    """A queued turn with its remaining use count."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.remaining = turn.times

    def matches(self, model: str | None) -> bool:
        return self.turn.model is None or self.turn.model == model


class ScriptedLLM:
    """Scripted OpenAI-compatible server on 127.0.0.1; use as ``async with ScriptedLLM() as llm``."""

    def __init__(
        self,
        *turns: Turn,
        responder: Responder | None = None,
        models: Sequence[str] = ("scripted",),
        port: int = 0,
    ) -> None:
        self._queue: list[_ScriptedTurn] = [_ScriptedTurn(t) for t in turns]
        self._responder = responder
        self._models = list(models)
        self._port = port
        self._received: list[RecordedRequest] = []
        self._unanswered: list[RecordedRequest] = []
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._transcripts: list[Transcript | ServerError] = []
        self._transcriptions: list[RecordedTranscription] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_get(MODELS_PATH, self._list_models)
        app.router.add_post(TRANSCRIPTION_PATH, self._transcribe)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/v1"

    async def close(self) -> None:
        """Release hanging/slow handlers first so shutdown never waits on them."""
        self._closed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: pass as litellm ``api_base`` or openai ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("ScriptedLLM is not started; use 'async with ScriptedLLM() as llm'")
        return self._base_url

    # -- scripting -------------------------------------------------------------------------------------

    def script(self, *turns: Turn) -> None:
        """Append turns; each request consumes the first queued turn whose ``model`` matches."""
        self._queue.extend(_ScriptedTurn(t) for t in turns)

    def script_transcripts(self, *answers: Transcript | ServerError) -> None:
        """Append answers to transcription requests, used once each in order."""
        self._transcripts.extend(answers)

    @property
    def transcriptions(self) -> list[RecordedTranscription]:
        """Transcription requests, in arrival order."""
        return list(self._transcriptions)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer requests no queued turn matches by calling ``responder(request)`` (sync or async)."""
        self._responder = responder

    @property
    def pending(self) -> list[Turn]:
        """Turns not yet (fully) consumed."""
        return [s.turn for s in self._queue]

    def assert_script_consumed(self) -> None:
        """Fail if turns with a finite use count are left or a request found nothing to answer it."""
        left = [s.turn for s in self._queue if s.remaining is not None]
        problems = []
        if left:
            problems.append(f"{len(left)} scripted turn(s) never used: {left}")
        if self._unanswered:
            models = [r.model for r in self._unanswered]
            problems.append(f"{len(models)} request(s) had no turn, for models {models}")
        if problems:
            raise AssertionError("; ".join(problems))

    # -- recording -------------------------------------------------------------------------------------

    @property
    def received(self) -> list[RecordedRequest]:
        """Every request received, any path, in arrival order."""
        return list(self._received)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Chat-completion requests only, in arrival order."""
        return [r for r in self._received if r.path == CHAT_PATH]

    @property
    def last_request(self) -> RecordedRequest:
        chats = self.requests
        if not chats:
            raise AssertionError("ScriptedLLM received no chat request")
        return chats[-1]

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` chat requests arrived (no sleeping in tests)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.requests) >= n), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"ScriptedLLM got {len(self.requests)} chat request(s) within {timeout}s, expected {n}"
                ) from None
        return self.requests

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.text()
        try:
            parsed = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            body=parsed if isinstance(parsed, dict) else None,
        )
        async with self._changed:
            self._received.append(recorded)
            self._changed.notify_all()
        return recorded

    # -- HTTP handlers ---------------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        await self._record(request)
        names = dict.fromkeys([*self._models, *(s.turn.model for s in self._queue if s.turn.model)])
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        fields = {k: str(v) for k, v in form.items() if k not in ("file", "model") and isinstance(v, str)}
        model = form.get("model")
        recorded = RecordedTranscription(
            headers={k.lower(): v for k, v in request.headers.items()},
            model=model if isinstance(model, str) else None,
            filename=getattr(upload, "filename", None),
            content_type=getattr(upload, "content_type", None),
            audio=upload.file.read() if isinstance(upload, web.FileField) else b"",
            fields=fields,
        )
        async with self._changed:
            self._transcriptions.append(recorded)
            self._changed.notify_all()
        if not self._transcripts:
            message = "ScriptedLLM: no scripted transcript"
            return web.json_response(_error_body(message, "server_error", "script_exhausted"), status=500)
        answer = self._transcripts.pop(0)
        if isinstance(answer, ServerError):
            return web.json_response(_error_body(answer.message, "server_error"), status=answer.status)
        return web.json_response({"text": answer.text})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        problem = self._validate(recorded)
        if problem is not None:
            field, reason = problem
            body = _error_body(f"{field}: {reason}", "invalid_request_error", "invalid_request", field)
            return web.json_response(body, status=400)
        turn = await self._next_turn(recorded)
        if turn is None:
            self._unanswered.append(recorded)
            message = f"ScriptedLLM: no scripted turn for model {recorded.model!r} and no responder"
            return web.json_response(_error_body(message, "server_error", "script_exhausted"), status=500)
        if not await self._pause(turn.delay):
            return web.Response(status=503, text="ScriptedLLM closing")
        return await self._answer(request, recorded, turn)

    @staticmethod
    def _validate(recorded: RecordedRequest) -> tuple[str, str] | None:
        """Name the offending field, as a real provider's 400 would."""
        if recorded.body is None:
            return "body", "must be a JSON object"
        if not isinstance(recorded.body.get("model"), str) or not recorded.body["model"]:
            return "model", "required, must be a non-empty string"
        messages = recorded.body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages", "required, must be a non-empty list"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"messages[{i}].role", "required, must be a string"
        return None

    async def _next_turn(self, recorded: RecordedRequest) -> Turn | None:
        for scripted in self._queue:
            if scripted.matches(recorded.model):
                if scripted.remaining is not None:
                    scripted.remaining -= 1
                    if scripted.remaining == 0:
                        self._queue.remove(scripted)
                return scripted.turn
        if self._responder is None:
            return None
        produced = self._responder(recorded)
        if inspect.isawaitable(produced):
            produced = await produced
        return produced

    async def _pause(self, seconds: float) -> bool:
        """Sleep as a behaviour of the double, cut short by close(); False means we are closing."""
        if seconds <= 0:
            return not self._closed.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)
        return not self._closed.is_set()

    async def _answer(self, request: web.Request, recorded: RecordedRequest, turn: Turn) -> web.StreamResponse:
        match turn:
            case RateLimit():
                headers = {} if turn.retry_after is None else {"Retry-After": f"{turn.retry_after:g}"}
                body = _error_body(turn.message, "requests", "rate_limit_exceeded")
                return web.json_response(body, status=429, headers=headers)
            case ServerError():
                return web.json_response(_error_body(turn.message, "server_error"), status=turn.status)
            case InvalidJSON():
                return web.Response(text=turn.body, content_type="application/json")
            case Hang():
                await self._closed.wait()
                return web.Response(status=503, text="ScriptedLLM closing")
            case StreamCut() if not recorded.stream:
                return await self._cut_body(request, recorded, turn)
            case _ if recorded.stream:
                return await self._stream(request, recorded, turn)
            case _:
                return web.json_response(self._completion(recorded, turn))

    def _usage(self, recorded: RecordedRequest, turn: Answer) -> dict[str, int]:
        if turn.usage is not None:
            return turn.usage.model_dump()
        prompt = sum(count_tokens(message_text(m)) for m in recorded.messages)
        completion = _completion_tokens(turn)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _tool_calls(self, turn: ToolCall | ToolCalls, response_id: int) -> list[dict[str, Any]]:
        calls = turn.calls if isinstance(turn, ToolCalls) else [turn]
        return [
            {
                "id": c.id or f"call_{response_id}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json()},
            }
            for i, c in enumerate(calls)
        ]

    def _completion(self, recorded: RecordedRequest, turn: Answer) -> dict[str, Any]:
        response_id = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(turn, Reply | StreamCut):
            message["content"] = turn.text
            finish = turn.finish_reason if isinstance(turn, Reply) else "stop"
        else:
            message["content"] = turn.text if isinstance(turn, ToolCalls) else None
            message["tool_calls"] = self._tool_calls(turn, response_id)
            finish = "tool_calls"
        return {
            "id": f"chatcmpl-{response_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": recorded.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": self._usage(recorded, turn),
        }

    async def _cut_body(self, request: web.Request, recorded: RecordedRequest, turn: StreamCut) -> web.StreamResponse:
        body = json.dumps(self._completion(recorded, turn)).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        return self._drop(request, response)

    @staticmethod
    def _drop(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Abort the TCP connection so the client sees a truncated response, not a clean end."""
        if request.transport is not None:
            request.transport.abort()
        return response

    async def _stream(self, request: web.Request, recorded: RecordedRequest, turn: Answer) -> web.StreamResponse:
        response_id = next(self._ids)
        include_usage = bool((recorded.body or {}).get("stream_options", {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{response_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": recorded.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            extra = {"usage": None} if include_usage else {}
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(payload: dict[str, Any] | str, pace: bool = True) -> bool:
            if pace and not await self._pause(turn.chunk_delay):
                return False
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())
            return True

        if not await send(chunk({"role": "assistant", "content": ""}), pace=False):
            return response
        text = turn.text if isinstance(turn, Reply | StreamCut | ToolCalls) else None
        pieces = _split_words(text or "")
        if isinstance(turn, StreamCut):
            for piece in pieces[: turn.after_chunks]:
                if not await send(chunk({"content": piece})):
                    return response
            return self._drop(request, response)
        for piece in pieces:
            if not await send(chunk({"content": piece})):
                return response
        finish = turn.finish_reason if isinstance(turn, Reply) else "tool_calls"
        if isinstance(turn, ToolCall | ToolCalls):
            for i, call in enumerate(self._tool_calls(turn, response_id)):
                head = {"index": i, "id": call["id"], "type": "function"}
                head["function"] = {"name": call["function"]["name"], "arguments": ""}
                if not await send(chunk({"tool_calls": [head]})):
                    return response
                for piece in _split_words(call["function"]["arguments"]):
                    delta = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                    if not await send(chunk(delta)):
                        return response
        if not await send(chunk({}, finish)):
            return response
        if include_usage:
            await send({**base, "choices": [], "usage": self._usage(recorded, turn)}, pace=False)
        await send("[DONE]", pace=False)
        await response.write_eof()
        return response


def load_script(path: Path) -> list[Turn]:
    """Read a JSON list of turns, each tagged with ``kind`` (e.g. ``{"kind": "reply", "text": "hi"}``)."""
    return TURNS.validate_json(path.read_bytes())


async def _serve(port: int, turns: list[Turn]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ScriptedLLM(*turns, port=port) as llm:
        print(llm.base_url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the double in its own process; prints the base URL on the first stdout line when ready."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = ephemeral)")
    parser.add_argument("--script", type=Path, help="JSON file: a list of turns tagged with 'kind'")
    args = parser.parse_args(argv)
    turns = load_script(args.script) if args.script else []
    asyncio.run(_serve(args.port, turns))


if __name__ == "__main__":
    sys.exit(main())
