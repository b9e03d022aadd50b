"""The Imperator: a MAD's Thought Engine, a tool-calling loop through Fiedler in which every call is validated.

The LLM is never trusted: each tool call it makes is checked (JSON arguments, a tool
that exists, arguments that satisfy the tool's pydantic model) before anything runs.
A bad call is answered with a corrective tool message naming the problem and the
fields, and published as a validation-failure event; too many in a row, or too many
steps, end the thought with a typed error, never a raw string or an exception.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, JsonValue, ValidationError

from bus.base import BusError, DeadlineExceeded, describe_exception
from bus.envelope import (
    DELTA_MEDIA_TYPE,
    DataPart,
    Envelope,
    ErrorInfo,
    FieldError,
    Part,
    ProsePart,
    field_errors,
)
from bus.topics import VALIDATION_FAILURE, StreamDelta, ValidationFailure, stream_topic
from mads.core import names
from mads.core.artifacts import ArtifactRef, artifact_part, found_in
from mads.core.errors import RemoteError, ToolFailure
from mads.core.tools import Call

if TYPE_CHECKING:
    from mads.core.base import MAD

log = logging.getLogger(__name__)

MAX_ECHO_NAME = 256
MAX_ECHO_ARGUMENTS = 200_000
"""Bounds of a tool call echoed back to Fiedler (its ``chat`` schema), so a monstrous call stays correctable."""

NO_LLM_CODE = "no_llm_configured"
PASSED_THROUGH = frozenset({"budget_exceeded"})
"""Fiedler's refusals the Imperator reports with their own code (the gateway answers 429 for them)."""


@dataclass
class ThoughtOutcome:
    """What the Imperator produced for one prose request."""

    parts: list[Part]
    error: ErrorInfo | None = None


class ImperatorSettings(BaseModel):
    """Bounds of one thought. A MAD may pass its own to :class:`Imperator`."""

    max_steps: int = Field(default=8, ge=1, le=64, description="LLM calls per request.")
    max_invalid: int = Field(default=3, ge=1, le=16, description="Consecutive invalid LLM turns before giving up.")
    role: str = Field(default="imperator", description="Fiedler role whose model thinks for this MAD.")
    fiedler: str = Field(default=names.FIEDLER, description="Address of the LLM router.")
    llm_timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one chat call.")
    history_turns: int = Field(
        default=20, ge=0, le=100, description="Earlier turns of this conversation (from Rogers) the LLM sees."
    )
    memory: str = Field(default=names.ROGERS, description="Address of the conversation store.")
    memory_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for the conversation history.")


class ChatCall(BaseModel):
    """A tool call as Fiedler returns it (raw ``arguments`` string)."""

    id: str
    name: str
    arguments: str


class ChatReply(BaseModel):
    """The subset of Fiedler's ``ChatResult`` the loop needs (extra fields ignored: Fiedler may grow)."""

    model: str
    content: str | None = None
    tool_calls: list[ChatCall] = Field(default_factory=list)
    finish_reason: str | None = None


class Invalid(Exception):
    """One invalid tool call: what kind of problem, the corrective text, the fields to blame."""

    def __init__(self, problem: str, detail: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.fields = fields or []


async def publish_stream(mad: MAD, topic: str, delta: StreamDelta, conversation_id: str | None) -> None:
    """Publish one stream delta for the current work (fire and forget; a closing bus drops it)."""
    part = DataPart(media_type=DELTA_MEDIA_TYPE, value=delta.model_dump(mode="json"))
    await mad.publish_event(topic, part, conversation_id=conversation_id)


class Imperator:
    """Runs one prose request to completion for ``mad``."""

    def __init__(self, mad: MAD, settings: ImperatorSettings | None = None) -> None:
        self.mad = mad
        self.settings = settings or ImperatorSettings()
        self._conversation_id: str | None = None
        self._topic: str | None = None
        self._artifacts: dict[str, ArtifactRef] = {}
        """Files the thought's tools made (by id), shown with the final answer."""

    async def run(self, envelope: Envelope) -> ThoughtOutcome:
        """Think until a final answer or a typed failure; nothing escapes as an exception."""
        self._conversation_id = envelope.conversation_id
        self._topic = stream_topic(envelope.conversation_id) if envelope.conversation_id else None
        try:
            return await self._loop(envelope)
        except Exception as exc:
            log.exception("imperator of %s failed on %s", self.mad.name, envelope.id)
            return await self._fail("imperator_failed", describe_exception(exc, self.mad.redactor.redact).message)

    async def _loop(self, envelope: Envelope) -> ThoughtOutcome:
        tools = {name: tool for name, tool in self.mad.tools().items() if tool.for_llm}
        messages: list[dict[str, JsonValue]] = [
            {"role": "system", "content": self.mad.system_prompt()},
            *await self._recall(envelope),
            {"role": "user", "content": envelope.text()},
        ]
        call = Call(envelope, via_llm=True)
        invalid_streak = 0
        for _step in range(self.settings.max_steps):
            try:
                reply = await self._chat(envelope, messages, tools)
            except RemoteError as exc:
                if exc.error.code == NO_LLM_CODE:
                    return await self._finish(ThoughtOutcome(parts=[ProsePart(text=exc.error.message)]))
                if exc.error.code in PASSED_THROUGH:
                    # A budget spent is the person's to see as such, not as a failure of this MAD.
                    return await self._fail(exc.error.code, exc.error.message, retryable=exc.error.retryable)
                message = f"the LLM call failed: {exc.error.code}: {exc.error.message}"
                return await self._fail("imperator_failed", message, retryable=exc.error.retryable)
            except DeadlineExceeded:
                message = f"{self.settings.fiedler} did not answer in time"
                return await self._fail("imperator_failed", message, retryable=True)
            if not reply.tool_calls and reply.content and reply.content.strip():
                made = [artifact_part(ref) for ref in self._artifacts.values()]
                return await self._finish(ThoughtOutcome(parts=[ProsePart(text=reply.content), *made]))
            problems = await self._turn(reply, messages, tools, call, invalid_streak + 1)
            invalid_streak = invalid_streak + 1 if problems else 0
            if invalid_streak >= self.settings.max_invalid:
                last = problems[-1]
                message = f"the LLM produced {invalid_streak} invalid turns in a row; last: {last.detail}"
                return await self._fail("llm_invalid_output", message, fields=last.fields)
        return await self._fail("imperator_failed", f"no final answer within {self.settings.max_steps} LLM steps")

    async def _recall(self, envelope: Envelope) -> list[dict[str, JsonValue]]:
        """Earlier turns between people and this MAD in the same conversation, oldest first.

        Conversations are kept forever by Rogers; the Imperator reads the recent part so
        a chat has memory. Only this MAD's own exchanges are included (requests to it,
        its prose replies), already redacted by Rogers. If the store is unreachable the
        turn goes on without memory rather than failing.
        """
        limit = self.settings.history_turns
        cid = envelope.conversation_id
        if not limit or cid is None or self.mad.name == self.settings.memory:
            return []
        try:
            page = await self.mad.call(
                self.settings.memory,
                "history",
                {"conversation_id": cid, "limit": min(200, limit * 4), "direction": "backward"},
                timeout=self.settings.memory_timeout,
            )
        except (RemoteError, DeadlineExceeded, BusError):
            return []
        turns: list[dict[str, JsonValue]] = []
        for message in page.get("messages", []) if isinstance(page, dict) else []:
            if not isinstance(message, dict) or message.get("id") == envelope.id or not message.get("text"):
                continue
            if message.get("kind") == "request" and message.get("recipient") == self.mad.address:
                turns.append({"role": "user", "content": message["text"]})
            elif message.get("kind") == "reply" and message.get("sender") == self.mad.address:
                turns.append({"role": "assistant", "content": message["text"]})
            if len(turns) >= limit:
                break
        turns.reverse()
        return turns

    async def _turn(
        self,
        reply: ChatReply,
        messages: list[dict[str, JsonValue]],
        tools: dict[str, Any],
        call: Call,
        attempt: int,
    ) -> list[Invalid]:
        """Answer one LLM turn: run its valid calls, correct its invalid ones.

        Returns the problems when the turn achieved nothing (no valid call), else ``[]``.
        """
        if not reply.tool_calls:
            problem = Invalid("no_answer", "Your reply was empty. Answer in text, or call one of the tools.")
            await self._report(problem, None, attempt)
            messages.append({"role": "user", "content": problem.detail})
            return [problem]
        messages.append(_assistant_message(reply))
        problems: list[Invalid] = []
        for tool_call in reply.tool_calls:
            try:
                arguments = self._validate(tool_call, tools)
            except Invalid as problem:
                await self._report(problem, tool_call.name, attempt)
                messages.append(_tool_message(tool_call, problem.detail))
                problems.append(problem)
                continue
            result = await self._execute(tool_call.name, arguments, call)
            messages.append(_tool_message(tool_call, json.dumps(result, default=str)))
            if self._topic:
                detail: dict[str, JsonValue] = {"tool": tool_call.name, "ok": "error" not in result}
                delta = StreamDelta(mad=self.mad.name, event="tool", detail=detail)
                await publish_stream(self.mad, self._topic, delta, self._conversation_id)
        return problems if len(problems) == len(reply.tool_calls) else []

    async def _chat(self, envelope: Envelope, messages: list[dict[str, JsonValue]], tools: dict[str, Any]) -> ChatReply:
        # Who is billed (this MAD, for this work's principal and conversation) is Fiedler's to read from
        # the envelope the runtime stamps, not an argument anyone could set.
        arguments: dict[str, JsonValue] = {"messages": messages, "role": self.settings.role}
        if tools:
            arguments["tools"] = [t.openai_function() for t in tools.values()]
        if self._topic and self.mad.bus.has_listeners(self._topic):
            # Streamed only for someone watching the conversation (a chat page's socket): a streamed
            # answer costs the LLM client several times the CPU of a whole one, and nobody else reads deltas.
            arguments["stream"] = True
        remaining = envelope.remaining()
        timeout = self.settings.llm_timeout if remaining is None else min(remaining, self.settings.llm_timeout)
        value = await self.mad.call(
            self.settings.fiedler,
            "chat",
            arguments,
            conversation_id=envelope.conversation_id,
            timeout=max(timeout, 0.001),
        )
        return ChatReply.model_validate(value)

    def _validate(self, tool_call: ChatCall, tools: dict[str, Any]) -> dict[str, JsonValue]:
        """The call's arguments if they are valid for an existing tool, else :class:`Invalid` saying why."""
        tool = tools.get(tool_call.name)
        if tool is None:
            known = ", ".join(sorted(tools)) or "none"
            raise Invalid(
                "unknown_tool",
                f'Unknown tool "{tool_call.name}". Available tools: {known}. Call one of them, or answer in text.',
                [FieldError(field="name", reason=f"unknown tool {tool_call.name!r}")],
            )
        try:
            arguments = json.loads(tool_call.arguments) if tool_call.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise Invalid(
                "bad_json",
                f'Invalid arguments for tool "{tool_call.name}": not valid JSON ({exc.msg} at position {exc.pos}). '
                "Call it again with a JSON object as arguments.",
                [FieldError(field="arguments", reason=f"invalid JSON: {exc.msg}")],
            ) from None
        if not isinstance(arguments, dict):
            raise Invalid(
                "bad_json",
                f'Invalid arguments for tool "{tool_call.name}": expected a JSON object, got '
                f"{type(arguments).__name__}. Call it again with a JSON object as arguments.",
                [FieldError(field="arguments", reason="must be a JSON object")],
            )
        try:
            tool.args_model.model_validate(arguments)
        except ValidationError as exc:
            fields = field_errors(exc)
            summary = "; ".join(f"{f.field}: {f.reason}" for f in fields[:8])
            raise Invalid(
                "invalid_arguments",
                f'Invalid arguments for tool "{tool_call.name}": {summary}. Call it again with valid arguments.',
                fields,
            ) from None
        return arguments

    async def _execute(self, name: str, arguments: dict[str, JsonValue], call: Call) -> dict[str, JsonValue]:
        """Run a validated call; a tool's failure becomes a result the LLM can read and recover from."""
        try:
            result = await self.mad.run_tool(name, arguments, call)
            for ref in found_in(result):
                self._artifacts.setdefault(ref.id, ref)
            return {"result": result}
        except (ToolFailure, RemoteError) as exc:
            error = self.mad.redact_error(exc.error)
            return {"error": error.model_dump(mode="json", include={"code", "message", "retryable"})}
        except Exception as exc:
            error = describe_exception(exc, self.mad.redactor.redact)
            return {"error": error.model_dump(mode="json", include={"code", "message"})}

    async def _report(self, problem: Invalid, tool: str | None, attempt: int) -> None:
        event = ValidationFailure(
            mad=self.mad.name,
            problem=problem.problem,  # type: ignore[arg-type]
            tool=tool,
            detail=problem.detail,
            fields=[f.field for f in problem.fields],
            conversation_id=self._conversation_id,
            attempt=attempt,
        )
        await self.mad.emit(VALIDATION_FAILURE, event.model_dump(mode="json"), conversation_id=self._conversation_id)

    async def _finish(self, outcome: ThoughtOutcome) -> ThoughtOutcome:
        if self._topic:
            delta = StreamDelta(mad=self.mad.name, event="done", done=True)
            await publish_stream(self.mad, self._topic, delta, self._conversation_id)
        return outcome

    async def _fail(
        self,
        code: str,
        message: str,
        *,
        fields: list[FieldError] | None = None,
        retryable: bool = False,
    ) -> ThoughtOutcome:
        error = ErrorInfo(code=code, message=message[:4000], fields=fields or [], retryable=retryable)
        if self._topic:
            delta = StreamDelta(mad=self.mad.name, event="error", done=True, detail={"code": code})
            await publish_stream(self.mad, self._topic, delta, self._conversation_id)
        return ThoughtOutcome(parts=[], error=error)


def _assistant_message(reply: ChatReply) -> dict[str, JsonValue]:
    """Echo the assistant turn back verbatim (raw arguments included) so tool results pair with their calls."""
    return {
        "role": "assistant",
        "content": reply.content,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name[:MAX_ECHO_NAME], "arguments": c.arguments[:MAX_ECHO_ARGUMENTS]},
            }
            for c in reply.tool_calls
        ],
    }


def _tool_message(tool_call: ChatCall, content: str) -> dict[str, JsonValue]:
    return {"role": "tool", "tool_call_id": tool_call.id, "content": content}
