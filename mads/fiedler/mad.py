"""Fiedler: the only MAD that calls LLMs. Every other MAD's Imperator reaches a model through its ``chat`` tool.

Keeping every model call in one place gives one registry of providers and keys, one
set of retry/fallback rules, one ledger of tokens and cost per MAD and per
conversation, and one trace/event per call.

It is also where secrets could reach a provider, so every API key it reads (environment
at start, Turing or environment at call time) is registered with the process's redactor,
and prompts are scrubbed before they leave: a user who pastes a known secret does not
send it to a provider. Replies and stream deltas are scrubbed too before they are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import JsonValue

from bus.base import waiting
from bus.topics import LLM_CALL, StreamDelta, stream_topic
from mads.core import authority, names
from mads.core.base import MAD, MadContext, ToolFailure
from mads.core.imperator import publish_stream
from mads.core.tools import Call, tool
from mads.fiedler.accounting import Ledger
from mads.fiedler.budgets import Amount, BudgetBook, BudgetExceeded, Subjects
from mads.fiedler.keys import KeyUnavailable
from mads.fiedler.llm import Completion, LLMClient, LLMError, cost_usd, warm_up
from mads.fiedler.registry import HOW_TO_CONFIGURE, Registry, UnknownModel
from mads.fiedler.schemas import (
    TRANSCRIPTION_ROLE,
    ChatArgs,
    ChatResult,
    FiedlerConfig,
    LLMCallEvent,
    ModelsArgs,
    ModelSpec,
    ModelsReport,
    TokenUsage,
    TranscribeArgs,
    Transcription,
    TurnUsageArgs,
    UsageArgs,
    UsageReport,
    UsageTotals,
)
from mads.fiedler.turn_usage import TurnUsage

TRACER_NAME = "mads.fiedler"
SECRET_TOOL = "get"
SECRET_TIMEOUT = 10.0


class Fiedler(MAD[FiedlerConfig]):
    name = names.FIEDLER
    description = "Routes every LLM call: model registry, retries and fallbacks, token and cost accounting."
    role_prompt = (
        "You answer questions about the ecosystem's language models and their usage. "
        "Use the models and usage tools; never reveal API keys."
    )
    config_model = FiedlerConfig

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self.registry = Registry.build(self.config)
        self.client = LLMClient(
            self.registry,
            retries=self.config.retries,
            retry_after=self.config.retry_after,
            redact=self.redactor.redact,
        )
        self.ledger = Ledger(self.data_dir / "usage.db", self.config.conversation_cache)
        self.budgets = BudgetBook(self.config.budgets)
        self.turns = TurnUsage(self.config.conversation_cache)
        self._warmup: asyncio.Task[object] | None = None
        """litellm's import takes seconds: it starts in the background at start-up, not on the first call."""

    async def on_start(self) -> None:
        self._remember_env_keys()
        await self.ledger.open()
        await self.budgets.open(self.ledger.db)
        if self.registry.configured:
            self._warmup = asyncio.create_task(warm_up(), name="fiedler:warm-up-litellm")

    async def ready(self) -> None:
        """Wait until litellm is loaded (start-up does not wait; the first call would)."""
        if self._warmup is not None:
            await asyncio.shield(self._warmup)

    async def on_stop(self) -> None:
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmup
        await self.ledger.close()

    def _scrubbed(self, values: list[dict[str, JsonValue]]) -> list[dict[str, JsonValue]]:
        """Messages (or tool definitions) with every known secret value replaced by [REDACTED]."""
        return cast("list[dict[str, JsonValue]]", self.redactor.redact_structure(values))

    def _remember_env_keys(self) -> None:
        """Provider keys in the environment are secrets too: the redactor learns them before any call."""
        for spec in self.registry.models:
            value = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            if value:
                self.redactor.register(value)

    async def _read_secret(self, path: str) -> JsonValue:
        return await self.call(names.TURING, SECRET_TOOL, {"path": path}, timeout=SECRET_TIMEOUT)

    # ---- tools ---------------------------------------------------------------------------

    @tool(
        "Chat completion on a registered model (by role or name); optional OpenAI tools; with stream, text deltas "
        "go to the request's conversation stream. Billed to the asking MAD, the request's principal and conversation."
    )
    async def chat(self, args: ChatArgs, call: Call) -> ChatResult:
        caller = names.mad_of(call.sender)
        principal = str(call.principal)
        conversation_id = call.conversation_id
        if not self.registry.configured:
            raise ToolFailure("no_llm_configured", HOW_TO_CONFIGURE)
        try:
            spec = self.registry.select(args.role, args.model)
        except UnknownModel as exc:
            raise ToolFailure("unknown_model", str(exc)) from None
        messages = self._scrubbed([m.model_dump(mode="json", exclude_none=True) for m in args.messages])
        tools = self._scrubbed(args.tools) if args.tools else args.tools
        subjects = Subjects(principal=principal, conversation=conversation_id, mad=caller, turn=call.turn)
        try:
            reservation = await self.budgets.reserve(subjects, self._estimate(spec, messages, tools, args.max_tokens))
        except BudgetExceeded as exc:
            await self._account(
                caller, principal, conversation_id, spec.name, None, time.perf_counter(), "budget", call.turn
            )
            raise ToolFailure("budget_exceeded", str(exc)) from None
        topic = stream_topic(conversation_id) if args.stream and conversation_id else None
        used = Amount()
        try:
            with authority.as_system():
                # The provider key is Fiedler's own business, never the person's: read as the system.
                chain, keys = await self._resolve_keys(spec)

            async def on_delta(text: str) -> None:
                assert topic is not None
                delta = StreamDelta(mad=caller, text=self.redactor.redact(text))
                await publish_stream(self, topic, delta, conversation_id)

            started = time.perf_counter()
            with trace.get_tracer(TRACER_NAME).start_as_current_span(
                f"chat {_wire_model(spec)}",
                kind=SpanKind.CLIENT,
                attributes=_request_attributes(spec, caller, conversation_id),
            ) as span:
                try:
                    with waiting():  # the LLM's answer takes seconds: Fiedler's slot serves other calls meanwhile
                        done = await self.client.complete(
                            chain,
                            keys,
                            messages,
                            tools=tools,
                            max_tokens=args.max_tokens,
                            temperature=args.temperature,
                            on_delta=on_delta if topic else None,
                            deadline=authority.current().remaining(),
                        )
                except LLMError as exc:
                    used = Amount(calls=1)
                    span.set_status(Status(StatusCode.ERROR, exc.code))
                    span.set_attribute("error.type", exc.code)
                    await self._account(
                        caller, principal, conversation_id, spec.name, None, started, exc.code, call.turn
                    )
                    raise ToolFailure(exc.code, exc.message, retryable=exc.retryable) from None
                result = self._result(done)
                used = Amount(calls=1, tokens=done.input_tokens + done.output_tokens, cost_usd=result.cost_usd)
                span.set_attribute("gen_ai.response.model", done.response_model or _wire_model(done.answered_by))
                span.set_attribute("gen_ai.usage.input_tokens", done.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", done.output_tokens)
                if done.finish_reason:
                    span.set_attribute("gen_ai.response.finish_reasons", [done.finish_reason])
            await self._account(
                caller, principal, conversation_id, done.answered_by.name, result, started, None, call.turn
            )
            return result
        except BaseException:
            if used.calls == 0:
                used = Amount(calls=1)  # an attempt that was cut short still counts as a call
            raise
        finally:
            await self.budgets.settle(reservation, used)

    def _estimate(
        self,
        spec: ModelSpec,
        messages: list[dict[str, JsonValue]],
        tools: list[dict[str, JsonValue]] | None,
        max_tokens: int | None,
    ) -> Amount:
        """What a call may use, reserved before it runs: prompt tokens (~4 characters each) plus the output cap."""
        prompt = (len(json.dumps(messages, default=str)) + len(json.dumps(tools or [], default=str))) // 4 + 1
        output = max_tokens or spec.max_tokens or self.config.budgets.default_max_tokens
        return Amount(calls=1, tokens=prompt + output, cost_usd=cost_usd(spec, prompt, output))

    @tool("The model registry: names, providers, roles, fallbacks and where keys come from (never the keys).")
    async def models(self, args: ModelsArgs) -> ModelsReport:
        return self.registry.report(self._read_secret)

    @tool(
        "Token and cost accounting: totals per principal, per MAD, per conversation and per model; optional "
        "filters. A person sees only their own usage; an operator sees everyone's."
    )
    async def usage(self, args: UsageArgs, call: Call) -> UsageReport:
        principal = args.principal
        if call.principal.is_person and not call.principal.is_operator:
            principal = str(call.principal)
        return await self.ledger.report(args.caller, args.conversation_id, principal)

    @tool(
        "Speech to text with the configured transcription model (role 'transcription'): a base64 recording in, "
        "its text out. Billed to the request's principal like a chat call."
    )
    async def transcribe(self, args: TranscribeArgs, call: Call) -> Transcription:
        caller = names.mad_of(call.sender)
        principal = str(call.principal)
        spec = self.registry.serving(TRANSCRIPTION_ROLE)
        if spec is None:
            raise ToolFailure(
                "no_transcription_model",
                f'no speech-to-text model is configured: give a model roles = ["{TRANSCRIPTION_ROLE}"] in [fiedler]',
            )
        subjects = Subjects(principal=principal, conversation=call.conversation_id, mad=caller, turn=call.turn)
        try:
            reservation = await self.budgets.reserve(subjects, Amount(calls=1))
        except BudgetExceeded as exc:
            raise ToolFailure("budget_exceeded", str(exc)) from None
        started = time.perf_counter()
        try:
            with authority.as_system():
                _chain, keys = await self._resolve_keys(spec)
            try:
                text = await self.client.transcribe(
                    spec,
                    keys.get(spec.name),
                    args.audio(),
                    media_type=args.media_type,
                    language=args.language,
                    deadline=authority.current().remaining(),
                )
            except LLMError as exc:
                await self._account(
                    caller, principal, call.conversation_id, spec.name, None, started, exc.code, call.turn
                )
                raise ToolFailure(exc.code, exc.message, retryable=exc.retryable) from None
            await self._account(caller, principal, call.conversation_id, spec.name, None, started, None, call.turn)
            return Transcription(text=self.redactor.redact(text), model=spec.name)
        finally:
            await self.budgets.settle(reservation, Amount(calls=1))

    @tool(
        "Tokens and cost of one turn (a person's message and every LLM call it caused, whatever MAD asked); "
        "zero when the turn made no call or is too old to remember. A person sees only their own turns."
    )
    async def turn_usage(self, args: TurnUsageArgs, call: Call) -> UsageTotals:
        found = self.turns.get(args.turn)
        if found is None:
            return UsageTotals()
        if call.principal.is_person and not call.principal.is_operator and found.principal != str(call.principal):
            raise ToolFailure("not_found", f"no turn {args.turn!r} of yours")
        return found.totals

    # ---- helpers -------------------------------------------------------------------------

    async def _resolve_keys(self, spec: ModelSpec) -> tuple[list[ModelSpec], dict[str, str | None]]:
        """Keys for the model and its fallbacks; a fallback without a key is skipped, the model itself fails."""
        chain: list[ModelSpec] = []
        keys: dict[str, str | None] = {}
        for candidate in self.registry.chain(spec):
            try:
                key = await self.registry.key_source(candidate, self._read_secret).resolve()
            except KeyUnavailable as exc:
                if candidate is spec:
                    raise ToolFailure("llm_key_unavailable", f"model {spec.name!r}: {exc}") from None
                continue
            if key:
                self.redactor.register(key)
            keys[candidate.name] = key
            chain.append(candidate)
        return chain, keys

    def _result(self, done: Completion) -> ChatResult:
        """The reply as published: a model that repeats a known secret does not get it onto the bus."""
        scrub = self.redactor.redact
        return ChatResult(
            model=done.answered_by.name,
            content=scrub(done.content) if done.content else done.content,
            tool_calls=[c.model_copy(update={"arguments": scrub(c.arguments)}) for c in done.tool_calls],
            finish_reason=done.finish_reason,
            usage=TokenUsage(input_tokens=done.input_tokens, output_tokens=done.output_tokens),
            cost_usd=cost_usd(done.answered_by, done.input_tokens, done.output_tokens),
        )

    async def _account(
        self,
        caller: str,
        principal: str,
        conversation_id: str | None,
        model: str,
        result: ChatResult | None,
        started: float,
        error_code: str | None,
        turn: str | None,
    ) -> None:
        usage = result.usage if result else TokenUsage()
        cost = result.cost_usd if result else 0.0
        entry = UsageTotals(
            calls=1,
            failed_calls=0 if error_code is None else 1,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
        )
        self.turns.add(turn, principal, entry)
        await self.ledger.record(
            principal=principal,
            caller=caller,
            conversation_id=conversation_id,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            ok=error_code is None,
        )
        event = LLMCallEvent(
            principal=principal,
            caller=caller,
            conversation_id=conversation_id,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            duration_ms=(time.perf_counter() - started) * 1000,
            ok=error_code is None,
            error_code=error_code,
        )
        await self.emit(LLM_CALL, event.model_dump(mode="json"), conversation_id=conversation_id)


def _wire_model(spec: ModelSpec) -> str:
    return spec.model.split("/", 1)[1]


def _request_attributes(spec: ModelSpec, caller: str, conversation_id: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": spec.provider,
        "gen_ai.request.model": _wire_model(spec),
        "gen_ai.agent.name": caller,
        "mad.fiedler.model": spec.name,
    }
    if conversation_id:
        attributes["gen_ai.conversation.id"] = conversation_id
    return attributes
