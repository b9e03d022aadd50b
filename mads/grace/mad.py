"""Grace, the MAD people talk to.

A person's message arrives from the gateway as a request from ``user.<name>`` carrying
that person as its principal. If it starts with ``/`` it is a command (see
:mod:`mads.grace.commands`) forwarded as a :class:`~bus.envelope.CommandPart` straight to
the named MAD — no LLM, zero tokens — *for that person*: the forwarded request carries
the same principal, so the receiver allows exactly what both Grace and the person may do.
Anything else goes to Grace's Imperator, which can call ``list_mads`` and ``handoff``
to pass the conversation to the MAD best placed to answer. Every reply carries the
MADs that took part, and handoffs are published on the conversation's stream so the
page can show who is working.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

from bus.base import DeadlineExceeded
from bus.envelope import (
    ERROR_MEDIA_TYPE,
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    FieldError,
    Kind,
    Part,
    ProsePart,
)
from bus.topics import PARTICIPANTS_MEDIA_TYPE, StreamDelta, stream_topic
from mads.core import names
from mads.core.artifacts import ARTIFACT_MEDIA_TYPE, ArtifactRef, artifact_part, artifact_refs, found_in
from mads.core.authority import PERSON_PREFIX
from mads.core.base import MAD, MadContext, ThoughtOutcome, ToolFailure
from mads.core.directory import Directory
from mads.core.imperator import publish_stream
from mads.core.tools import Call, tool
from mads.grace.commands import (
    CommandSyntaxError,
    HelpCommand,
    ToolCommand,
    format_help,
    format_result,
    is_command,
    parse,
)
from mads.grace.schemas import GraceConfig, HandoffArgs, ListMadsArgs, MadList, MadSummary


def _error_part(error: ErrorInfo) -> DataPart:
    return DataPart(media_type=ERROR_MEDIA_TYPE, value=error.model_dump(mode="json"))


class Grace(MAD[GraceConfig]):
    name = names.GRACE
    description = (
        "The person's interface to the ecosystem: answers them, runs their /commands, "
        "and hands the conversation to the MAD best placed to help."
    )
    role_prompt = (
        "You are the first point of contact for a person. Answer directly when you can. When another MAD is "
        "better placed, call list_mads to see who is running and what they do, then call handoff with that "
        "MAD's name and a self-contained request; relay its answer and say who helped. People can run any "
        "MAD's tool themselves with a slash command; suggest /help when they ask what is possible."
    )
    config_model = GraceConfig

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self.directory = Directory(self.bus, sender=self.address)
        self._participants: dict[str, list[str]] = {}
        """Per request being handled (by envelope id): the MADs that took part so far, in order."""

    async def on_start(self) -> None:
        await self.directory.start()

    async def on_stop(self) -> None:
        await self.directory.stop()

    # ---- requests ------------------------------------------------------------------------

    async def handle_work(self, envelope: Envelope) -> Envelope | None:
        if envelope.kind is not Kind.REQUEST:
            return await super().handle_work(envelope)
        self._participants[envelope.id] = [self.name]
        try:
            if self._is_user_command(envelope):
                reply = await self._command(envelope)
            else:
                reply = await super().handle_work(envelope)
        finally:
            took_part = self._participants.pop(envelope.id, [self.name])
        if reply is None or reply.kind is not Kind.REPLY:
            return reply
        listed = DataPart(media_type=PARTICIPANTS_MEDIA_TYPE, value={"participants": list(took_part)})
        return envelope.reply(*reply.content, listed)

    def _is_user_command(self, envelope: Envelope) -> bool:
        """A person typed a ``/command`` (an LLM's prose is never run as one: it reaches Grace from a MAD)."""
        return (
            envelope.sender.startswith(PERSON_PREFIX)
            and envelope.principal.is_person
            and all(isinstance(p, ProsePart) for p in envelope.content)
            and is_command(envelope.text())
        )

    def _note(self, envelope: Envelope, mad: str) -> None:
        took_part = self._participants.get(envelope.id)
        if took_part is not None and mad not in took_part:
            took_part.append(mad)

    async def think(self, envelope: Envelope) -> ThoughtOutcome:
        self._note(envelope, names.FIEDLER)
        return await super().think(envelope)

    async def _stream(self, envelope: Envelope, delta: StreamDelta) -> None:
        if not envelope.conversation_id:
            return
        topic = stream_topic(envelope.conversation_id)
        # Deltas are for someone watching the conversation (a chat page's socket); nobody else reads them
        # (Rogers does not store them). A transport that cannot tell says someone listens.
        if self.bus.has_listeners(topic):
            await publish_stream(self, topic, delta, envelope.conversation_id)

    # ---- slash commands ------------------------------------------------------------------

    async def _command(self, envelope: Envelope) -> Envelope:
        try:
            command = parse(envelope.text())
        except CommandSyntaxError as exc:
            error = ErrorInfo(
                code="command_syntax", message=exc.reason, fields=[FieldError(field=exc.field, reason=exc.reason)]
            )
            return await self._answer(envelope, str(exc), _error_part(error))
        if isinstance(command, HelpCommand):
            cards = self._live_cards()
            return await self._answer(envelope, format_help(cards, command.mad), DataPart(value=self._summaries(cards)))
        return await self._run_command(envelope, command)

    async def _run_command(self, envelope: Envelope, command: ToolCommand) -> Envelope:
        if self._is_internal(command):
            error = ErrorInfo(
                code="not_a_command",
                message=f"{command.mad}.{command.tool} is used by the ecosystem's components, not run by people",
                fields=[FieldError(field="tool", reason="internal tool")],
            )
            return await self._answer(envelope, _failure_text(command, error), _error_part(error))
        if self.directory.card(command.mad) is None or not self.directory.is_alive(command.mad):
            # Nothing is sent to a MAD that is not running, so it never becomes a participant of the conversation.
            error = ErrorInfo(
                code="no_route",
                message=f"{command.mad!r} is not running: nothing on this bus serves it",
                fields=[FieldError(field="mad", reason="not running")],
            )
            return await self._answer(envelope, _failure_text(command, error), _error_part(error))
        self._note(envelope, command.mad)
        await self._stream(envelope, StreamDelta(mad=command.mad, event="tool", detail={"tool": command.tool}))
        remaining = envelope.remaining()
        timeout = self.config.command_timeout if remaining is None else min(remaining, self.config.command_timeout)
        try:
            reply = await self.request(
                command.mad,
                CommandPart(tool=command.tool, arguments=command.arguments),
                conversation_id=envelope.conversation_id,
                timeout=max(timeout, 0.001),
            )
        except DeadlineExceeded:
            error = ErrorInfo(
                code="upstream_timeout", message=f"{command.mad} did not answer within {timeout:g}s", retryable=True
            )
            return await self._answer(
                envelope, f"/{command.mad} {command.tool} failed: {error.message}", _error_part(error)
            )
        if reply.error is not None:
            return await self._answer(envelope, _failure_text(command, reply.error), _error_part(reply.error))
        values = [
            p.value
            for p in reply.content
            if isinstance(p, DataPart) and p.media_type not in (PARTICIPANTS_MEDIA_TYPE, ARTIFACT_MEDIA_TYPE)
        ]
        value: JsonValue = values[0] if len(values) == 1 else values
        text = format_result(command.mad, command.tool, value, self.config.max_result_chars)
        made = [artifact_part(ref) for ref in _artifacts_of(reply, value)]
        return await self._answer(envelope, text, DataPart(value=value), *made)

    async def _answer(self, envelope: Envelope, text: str, *parts: Part) -> Envelope:
        """Reply with ``text`` (also streamed, so every open page sees it) and any data parts."""
        await self._stream(envelope, StreamDelta(mad=self.name, text=text))
        await self._stream(envelope, StreamDelta(mad=self.name, event="done", done=True))
        return envelope.reply(ProsePart(text=text), *parts)

    # ---- the directory ------------------------------------------------------------------

    def _is_internal(self, command: ToolCommand) -> bool:
        """The tool is marked internal on its MAD's card (such as McNamara's ``record``)."""
        card = self.directory.card(command.mad) or {}
        return any(t.get("name") == command.tool and t.get("internal") for t in card.get("tools", []))

    def _live_cards(self) -> list[dict[str, Any]]:
        return [e.card for e in self.directory.latest() if e.alive and e.address == e.mad]

    @staticmethod
    def _summaries(cards: list[dict[str, Any]]) -> dict[str, JsonValue]:
        return MadList(
            mads=[
                MadSummary(
                    name=str(c.get("name")),
                    description=str(c.get("description", "")),
                    alive=True,
                    accepts_prose=bool(c.get("accepts_prose", True)),
                    tools=[str(t.get("name")) for t in c.get("tools", [])],
                )
                for c in sorted(cards, key=lambda c: str(c.get("name")))
            ]
        ).model_dump(mode="json")

    # ---- tools (for the Imperator, and for /grace commands) ------------------------------

    @tool("List the MADs that are running: name, what they do, whether they take prose, and their tools.")
    async def list_mads(self, args: ListMadsArgs) -> dict[str, JsonValue]:
        return self._summaries(self._live_cards())

    @tool(
        "Hand the conversation to another MAD: it receives `request` as prose in this conversation and "
        "its answer comes back to you. Use list_mads first to pick the MAD."
    )
    async def handoff(self, args: HandoffArgs, call: Call) -> dict[str, JsonValue]:
        if args.mad == self.name:
            raise ToolFailure("invalid_handoff", "that is you; answer yourself or hand off to another MAD")
        card = self.directory.card(args.mad)
        if card is None or not self.directory.is_alive(args.mad):
            running = ", ".join(sorted(str(c.get("name")) for c in self._live_cards())) or "none"
            raise ToolFailure("mad_unavailable", f"no MAD named {args.mad!r} is running (running: {running})")
        if not card.get("accepts_prose", True):
            raise ToolFailure("prose_not_accepted", f"{args.mad} only runs tools; it cannot take a handoff")
        self._note(call.envelope, args.mad)
        detail: dict[str, JsonValue] = {"from": self.name, "request": args.request[:500]}
        await self._stream(call.envelope, StreamDelta(mad=args.mad, event="handoff", detail=detail))
        remaining = call.envelope.remaining()
        timeout = self.config.handoff_timeout if remaining is None else min(remaining, self.config.handoff_timeout)
        reply = await self.ask(
            args.mad, args.request, conversation_id=call.conversation_id, timeout=max(timeout, 0.001)
        )
        if reply.error is not None:
            raise ToolFailure(reply.error.code, f"{args.mad}: {reply.error.message}", retryable=reply.error.retryable)
        data = [
            p.value
            for p in reply.content
            if isinstance(p, DataPart) and p.media_type not in (PARTICIPANTS_MEDIA_TYPE, ARTIFACT_MEDIA_TYPE)
        ]
        made = [ref.model_dump(mode="json") for ref in artifact_refs(reply.content)]
        return {"mad": args.mad, "answer": reply.text(), "data": data, "artifacts": made}


def _artifacts_of(reply: Envelope, value: JsonValue) -> list[ArtifactRef]:
    """The files a command's reply carries: as artifact parts, or named in its result."""
    found = {ref.id: ref for ref in artifact_refs(reply.content)}
    for ref in found_in(value):
        found.setdefault(ref.id, ref)
    return list(found.values())


def _failure_text(command: ToolCommand, error: ErrorInfo) -> str:
    lines = [f"/{command.mad} {command.tool} failed: {error.code}: {error.message}"]
    lines.extend(f"  {f.field}: {f.reason}" for f in error.fields)
    if error.code == "unknown_tool":
        lines.append(f"Try /help {command.mad} to see its tools.")
    elif error.code == "no_route":
        lines.append("Try /help to see which MADs are running.")
    return "\n".join(lines)
