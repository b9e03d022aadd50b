"""The MAD: a Thought Engine (an LLM "Imperator") plus an Action Engine (typed tools).

Every MAD subclasses :class:`MAD`. Its handler splits each request by part type:

- **command** parts run directly against the named tool — no LLM, zero tokens;
- **prose** parts go to the Imperator, a tool-calling loop through Fiedler in which
  every tool call is validated (see :mod:`mads.core.imperator`);
- **data** parts go to :meth:`MAD.on_data` (refused unless the MAD accepts data).

MADs never import each other: :meth:`MAD.call` and :meth:`MAD.ask` go over the bus.
Persistent MADs start at boot; :meth:`MAD.ephemeral` makes a short-lived instance of
a role for one task and discards it afterwards (the seeds' eMADs).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast, final

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from bus.base import Bus, BusClosed, Subscription
from bus.contract import Contract
from bus.envelope import (
    JSON_MEDIA_TYPE,
    MAX_CHAIN,
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    Kind,
    Part,
    ProsePart,
    trusted_envelope,
    validation_error,
)
from bus.ids import new_id
from bus.topics import MAD_FAULT, TOOL_CALL, MadFault, ToolCallEvent
from bus.tracing import current_trace
from mads.core import authority
from mads.core.errors import RemoteError, ToolFailure
from mads.core.handle import MadBus
from mads.core.imperator import Imperator, ThoughtOutcome
from mads.core.redaction import SecretRedactor
from mads.core.tools import Call, Tool, collect_tools

log = logging.getLogger(__name__)


class NoConfig(BaseModel):
    """The configuration of a MAD that takes none: any key is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class MadContext:
    """What the host gives every MAD: the bus, its config section, its data directory, its redactor.

    ``bus`` is the bus itself; the MAD wraps it in its own :class:`~mads.core.handle.MadBus`,
    which sends only as that MAD and only for the work in progress.
    """

    bus: Bus
    data_dir: Path
    config: BaseModel = field(default_factory=NoConfig)
    capabilities: dict[str, Any] = field(default_factory=dict)
    """Infrastructure granted to this MAD by configuration (e.g. ``"sandbox"``)."""
    redactor: SecretRedactor = field(default_factory=SecretRedactor)
    """The process's secret redactor: what leaves this MAD (errors, stored text, prompts) passes through it."""


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class MAD(Generic[ConfigT]):
    """Base class of every MAD. Subclasses set the class attributes and add ``@tool`` methods.

    ``class Grace(MAD[GraceConfig])`` with ``config_model = GraceConfig``: the base validates the
    MAD's configuration section once, and ``self.config`` is typed.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    role_prompt: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]] = NoConfig
    persistent: ClassVar[bool] = True
    accepts_prose: ClassVar[bool] = True
    accepts_data: ClassVar[bool] = False
    concurrency: ClassVar[int] = 16
    call_timeout: ClassVar[float] = 60.0

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        self.ctx = ctx
        self.bus = MadBus(ctx.bus, self.name)
        self.redactor = ctx.redactor
        config = ctx.config
        if not isinstance(config, self.config_model):
            config = self.config_model.model_validate(config.model_dump())
        self.config = cast(ConfigT, config)
        self.instance = instance
        self.address = f"{self.name}.{instance}" if instance else self.name
        self._tools = collect_tools(self)
        self._subscription: Subscription | None = None

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """This MAD's own persistent directory (created on first use)."""
        path = self.ctx.data_dir / self.name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    async def start(self) -> None:
        await self.on_start()
        self._subscription = await self.bus.subscribe(
            self.address, self.handle, contract=self.contract(), concurrency=self.concurrency
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        await self.on_stop()

    async def on_start(self) -> None:
        """Open resources (databases, clients) before the first message arrives."""

    async def ready(self) -> None:
        """Wait until background start-up work is done (Fiedler: litellm loaded); most MADs have none."""

    async def on_stop(self) -> None:
        """Release resources after the last message has been handled."""

    @classmethod
    @asynccontextmanager
    async def ephemeral(cls, ctx: MadContext) -> AsyncIterator[MAD]:
        """A fresh instance of this role on its own address, stopped and discarded on exit."""
        mad = cls(ctx, instance=new_id())
        await mad.start()
        try:
            yield mad
        finally:
            await mad.stop()

    # ---- the Action Engine ---------------------------------------------------------------

    def tools(self) -> dict[str, Tool]:
        return self._tools

    def add_tool(self, tool: Tool) -> None:
        """Grant a tool at run time (capabilities such as the sandbox's ``run_python``)."""
        self._tools[tool.name] = tool

    def tool_descriptors(self) -> list[dict[str, Any]]:
        return [t.descriptor() for t in self._tools.values()]

    def contract(self) -> Contract:
        return Contract(
            {name: t.args_model for name, t in self._tools.items()},
            accepts_prose=self.accepts_prose,
            accepts_data=self.accepts_data,
        )

    def card(self) -> dict[str, Any]:
        """What the directory and the gateway show about this MAD."""
        return {
            "name": self.name,
            "address": self.address,
            "description": self.description,
            "persistent": self.persistent,
            "accepts_prose": self.accepts_prose,
            "tools": self.tool_descriptors(),
        }

    async def run_tool(self, name: str, arguments: dict[str, JsonValue], call: Call) -> JsonValue:
        """Validate and run one tool. Raises ``KeyError`` / ``ValidationError`` on bad input."""
        tool = self._tools[name]
        args = tool.args_model.model_validate(arguments)
        if tool.operator and (call.via_llm or not call.principal.is_operator):
            who = "an LLM" if call.via_llm else str(call.principal)
            raise ToolFailure("forbidden", f"{self.name}.{name} is an operator action; {who} may not run it")
        if tool.internal and (call.via_llm or call.sender.startswith(authority.PERSON_PREFIX)):
            raise ToolFailure("forbidden", f"{self.name}.{name} is for the ecosystem's components, not for people")
        started = time.perf_counter()
        ok = False
        try:
            result = await tool.invoke(args, call)
            ok = True
            return result
        finally:
            await self.emit(
                TOOL_CALL,
                ToolCallEvent(
                    mad=self.name,
                    tool=name,
                    via_llm=call.via_llm,
                    ok=ok,
                    conversation_id=call.conversation_id,
                    caller=call.sender,
                    principal=str(call.principal),
                    chain=list(call.envelope.chain),
                    duration_ms=(time.perf_counter() - started) * 1000,
                ).model_dump(mode="json"),
                conversation_id=call.conversation_id,
            )

    # ---- message handling ----------------------------------------------------------------

    @final
    async def handle(self, envelope: Envelope) -> Envelope | None:
        """Handle one envelope as the work it carries (its principal, turn, chain and deadline).

        Final: a MAD customises :meth:`handle_work`, so nothing it does runs outside its work's authority.
        """
        with authority.working_on(envelope):
            try:
                return await self.handle_work(envelope)
            except Exception as exc:
                # The MAD's own code failed (not an LLM's output, which the Imperator turns into typed errors):
                # McNamara counts these per MAD, and quarantines a MAD that keeps crashing.
                fault = MadFault(mad=self.name, error_type=type(exc).__name__[:200], envelope_id=envelope.id)
                await self.emit(MAD_FAULT, fault.model_dump(mode="json"), conversation_id=envelope.conversation_id)
                raise

    async def handle_work(self, envelope: Envelope) -> Envelope | None:
        """The request or event, split by part type (runs with ``envelope``'s work current)."""
        if envelope.kind is Kind.EVENT:
            await self.on_event(envelope)
            return None
        out: list[Part] = []
        call = Call(envelope)
        for index, part in enumerate(envelope.content):
            if isinstance(part, CommandPart):
                try:
                    value = await self.run_tool(part.tool, part.arguments, call)
                except ValidationError as exc:
                    return envelope.error_reply(
                        validation_error(exc, prefix=f"content.{index}.arguments", code="invalid_arguments")
                    )
                except (RemoteError, ToolFailure) as exc:
                    return envelope.error_reply(self.redact_error(exc.error))
                out.append(self.result_part(part.tool, value))
        if any(isinstance(p, ProsePart) for p in envelope.content):
            outcome = await self.think(envelope)
            if outcome.error is not None:
                return envelope.error_reply(self.redact_error(outcome.error))
            out.extend(outcome.parts)
        data = [p for p in envelope.content if isinstance(p, DataPart)]
        if data:
            out.extend(await self.on_data(envelope, data))
        if not out:
            out.append(DataPart(value=None))
        return envelope.reply(*out)

    def result_part(self, tool: str, value: JsonValue) -> DataPart:
        """The reply part carrying one tool's result; a MAD may label some results (e.g. secrets)."""
        return DataPart(media_type=JSON_MEDIA_TYPE, value=value)

    def redact_error(self, error: ErrorInfo) -> ErrorInfo:
        """``error`` with known secrets scrubbed from its message and field reasons: tools quote their
        input ("no conversation 'x'"), and that input may be a secret someone pasted."""
        redact = self.redactor.redact
        message = redact(error.message)
        fields = [f.model_copy(update={"reason": redact(f.reason)}) for f in error.fields]
        if message == error.message and all(a.reason == b.reason for a, b in zip(fields, error.fields, strict=True)):
            return error
        return error.model_copy(update={"message": message, "fields": fields})

    async def think(self, envelope: Envelope) -> ThoughtOutcome:
        """Send prose to the Imperator (a validated tool-calling loop through Fiedler)."""
        return await Imperator(self).run(envelope)

    async def on_event(self, envelope: Envelope) -> None:
        """Events addressed to this MAD; ignored unless a subclass cares."""

    async def on_data(self, envelope: Envelope, parts: list[DataPart]) -> list[Part]:
        """Data parts of a request (only reached when ``accepts_data`` is true)."""
        return []

    def system_prompt(self) -> str:
        return f"You are {self.name}: {self.description}\n{self.role_prompt}".strip()

    # ---- talking to peers ----------------------------------------------------------------

    async def request(
        self,
        recipient: str,
        *parts: Part,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> Envelope:
        """Send a request and wait for its reply, as part of the current work.

        The envelope carries the work's principal and turn unchanged and its chain extended
        by this MAD; its deadline is ``timeout`` (default ``call_timeout``) from now but never
        later than the work's own. There is no way to name another principal: a relay such
        as Grace forwards a person's command *for* that person by construction.
        """
        work = authority.current()
        chain = work.onward(self.address)
        try:
            authority.check_chain(chain)
        except authority.ChainTooLong as exc:
            raise RemoteError(recipient, ErrorInfo(code="chain_too_long", message=str(exc))) from None
        envelope = trusted_envelope(
            sender=self.address,
            recipient=recipient,
            kind=Kind.REQUEST,
            conversation_id=conversation_id,
            deadline=work.deadline_within(timeout or self.call_timeout),
            trace=current_trace(),
            principal=work.principal,
            turn=work.turn,
            chain=chain,
            content=list(parts),
        )
        return await self.bus.request(envelope)

    async def call(
        self,
        recipient: str,
        tool: str,
        arguments: dict[str, JsonValue] | None = None,
        *,
        conversation_id: str | None = None,
        timeout: float | None = None,
    ) -> JsonValue:
        """Run a peer's tool by command (no LLM) and return its result; errors raise :class:`RemoteError`."""
        reply = await self.request(
            recipient,
            CommandPart(tool=tool, arguments=arguments or {}),
            conversation_id=conversation_id,
            timeout=timeout,
        )
        if reply.error is not None:
            raise RemoteError(recipient, reply.error)
        values = reply.data()
        return values[0] if values else None

    async def ask(
        self, recipient: str, text: str, *, conversation_id: str | None = None, timeout: float | None = None
    ) -> Envelope:
        """Hand prose to a peer's Imperator and return its reply envelope."""
        return await self.request(recipient, ProsePart(text=text), conversation_id=conversation_id, timeout=timeout)

    async def emit(self, topic: str, value: JsonValue, *, conversation_id: str | None = None) -> None:
        """Publish an event (fire and forget; nobody listening is fine; a closing bus drops it)."""
        await self.publish_event(topic, DataPart(value=value), conversation_id=conversation_id)

    async def publish_event(self, topic: str, part: DataPart, *, conversation_id: str | None = None) -> None:
        """Publish one event part for the current work (a closing bus drops it)."""
        work = authority.current()
        with contextlib.suppress(BusClosed):
            await self.bus.publish(
                trusted_envelope(
                    sender=self.address,
                    recipient=topic,
                    kind=Kind.EVENT,
                    conversation_id=conversation_id,
                    trace=current_trace(),
                    principal=work.principal,
                    turn=work.turn,
                    chain=work.onward(self.address)[-MAX_CHAIN:],
                    content=[part],
                )
            )


__all__ = ["MAD", "MadContext", "NoConfig", "RemoteError", "ThoughtOutcome", "ToolFailure"]
