"""The one place that talks to litellm: routing with retries and fallbacks, streaming, errors, cost.

litellm is imported lazily, in a thread (its import takes seconds), with its cost map
kept local so nothing reaches the network at import time. A ``litellm.Router`` is built
per model chain and per set of resolved keys (cached by a digest of the keys), so a
rotated key takes effect on the next call. Cooldowns are disabled: with one
deployment per model a cooldown would only turn a transient failure into a
"no deployments available" error for unrelated later calls; retries and fallbacks
already handle the failure inside the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pydantic import JsonValue

from bus.base import Redact, verbatim
from mads.fiedler.registry import Registry
from mads.fiedler.schemas import ModelSpec, ToolCallOut

DeltaSink = Callable[[str], Awaitable[None]]
LOCAL_PLACEHOLDER_KEY = "no-key"
"""OpenAI-compatible local servers take any key, but the OpenAI client insists on one."""

_litellm: ModuleType | None = None
_import_lock = threading.Lock()
"""A thread lock, not an asyncio one: the import runs in worker threads and must happen once per process."""


LAZY_SUBMODULES = ("litellm.proxy._types", "openai.resources.chat", "openai.types.chat")
"""Imported lazily inside the first completion call (the openai client's ``chat`` alone loads ~450 modules,
seconds of CPU on the event loop); loading them in the import thread keeps the first call fast."""


def _import_litellm() -> ModuleType:
    with _import_lock:
        return _import_litellm_once()


def _import_litellm_once() -> ModuleType:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    module = importlib.import_module("litellm")
    module.suppress_debug_info = True
    module.drop_params = True
    for name in LAZY_SUBMODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    return module


async def load_litellm() -> ModuleType:
    """Import litellm once, off the event loop, in a daemon thread.

    Not the loop's default executor: ``asyncio.run`` joins that executor's threads when it ends, so a
    process asked to stop while the import (seconds of CPU) is still running would wait for it.
    """
    global _litellm
    if _litellm is None:
        _litellm = await _in_daemon_thread(_import_litellm)
    return _litellm


async def _in_daemon_thread(work: Callable[[], ModuleType]) -> ModuleType:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ModuleType] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            module = work()
        except BaseException as exc:  # handed to the awaiting task, never lost in the thread
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(deliver, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, lambda: future.set_result(module))

    threading.Thread(target=run, name="litellm-import", daemon=True).start()
    return await future


async def warm_up() -> ModuleType:
    """Import litellm and run one offline (mocked) streaming completion through a Router.

    litellm loads much of its provider and streaming code on the first real call; doing that at
    start-up, with a mock that never leaves the process, keeps a person's first message from
    paying seconds for it. A failure here only means the first real call pays instead.
    """
    litellm = await load_litellm()
    router = litellm.Router(
        model_list=[{"model_name": "warm-up", "litellm_params": {"model": "openai/warm-up", "api_key": "none"}}]
    )
    try:
        stream = await router.acompletion(
            model="warm-up", messages=[{"role": "user", "content": "hi"}], mock_response="ready", stream=True
        )
        async for _chunk in stream:
            pass
    except Exception as exc:
        logging.getLogger(__name__).debug("litellm warm-up did not complete: %s", type(exc).__name__)
    return litellm


class LLMError(Exception):
    """A provider failure after retries and fallbacks, with a stable code and a key-free message."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class Completion:
    """One finished completion, whichever model in the chain produced it."""

    answered_by: ModelSpec
    response_model: str | None
    content: str | None
    tool_calls: list[ToolCallOut]
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


@dataclass
class _ToolCallBuilder:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class LLMClient:
    """Chat completions over a registry, through litellm's Router."""

    def __init__(self, registry: Registry, *, retries: int, retry_after: float, redact: Redact = verbatim) -> None:
        self.registry = registry
        self.redact = redact
        self.retries = retries
        self.retry_after = retry_after
        self._routers: dict[tuple[str, ...], Any] = {}

    async def complete(
        self,
        chain: list[ModelSpec],
        keys: dict[str, str | None],
        messages: list[dict[str, JsonValue]],
        *,
        tools: list[dict[str, JsonValue]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_delta: DeltaSink | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """Run one chat completion on ``chain[0]``, falling back along ``chain``. Raises :class:`LLMError`.

        ``deadline`` is the seconds left to the request that asked: every attempt is bounded by it,
        and when it passes the call is cancelled — no retry or fallback starts after it.
        """
        litellm = await load_litellm()
        spec = chain[0]
        router = self._router(litellm, chain, keys)
        params: dict[str, Any] = {"model": spec.name, "messages": messages}
        if tools:
            params["tools"] = tools
        if max_tokens or spec.max_tokens:
            params["max_tokens"] = max_tokens or spec.max_tokens
        if temperature is not None:
            params["temperature"] = temperature
        if deadline is not None:
            params["timeout"] = max(0.001, min(deadline, self.registry.timeout(spec)))
        try:
            async with asyncio.timeout(deadline):
                if on_delta is None:
                    response = await router.acompletion(**params)
                    return self._from_response(response, chain)
                return await self._stream(router, params, chain, on_delta)
        except LLMError:
            raise
        except TimeoutError:
            raise LLMError(
                "llm_timeout", f"model {spec.name!r}: the request's deadline passed before an answer", retryable=True
            ) from None
        except Exception as exc:
            raise classify(litellm, exc, spec, keys, self.redact) from None

    async def transcribe(
        self,
        spec: ModelSpec,
        key: str | None,
        audio: bytes,
        *,
        media_type: str,
        language: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """Speech to text on ``spec`` (litellm ``atranscription``); raises :class:`LLMError`."""
        litellm = await load_litellm()
        timeout = (
            self.registry.timeout(spec) if deadline is None else max(0.001, min(deadline, self.registry.timeout(spec)))
        )
        extension = media_type.split("/", 1)[1].removeprefix("x-")
        params: dict[str, Any] = {
            "model": spec.model,
            "file": (f"speech.{extension}", audio, media_type),
            "timeout": timeout,
        }
        if spec.api_base:
            params["api_base"] = spec.api_base
        if key is not None:
            params["api_key"] = key
        elif spec.api_base:
            params["api_key"] = LOCAL_PLACEHOLDER_KEY
        if language:
            params["language"] = language
        try:
            async with asyncio.timeout(deadline):
                response = await litellm.atranscription(**params)
        except TimeoutError:
            raise LLMError(
                "llm_timeout", f"model {spec.name!r}: the request's deadline passed before a transcript", retryable=True
            ) from None
        except Exception as exc:
            raise classify(litellm, exc, spec, {spec.name: key}, self.redact) from None
        return str(getattr(response, "text", "") or "")

    def _router(self, litellm: ModuleType, chain: list[ModelSpec], keys: dict[str, str | None]) -> Any:
        digest = hashlib.sha256(json.dumps([keys.get(s.name) for s in chain]).encode()).hexdigest()
        cache_key = (*(s.name for s in chain), digest)
        router = self._routers.get(cache_key)
        if router is None:
            names = {s.name for s in chain}
            fallbacks = [
                {name: [t for t in targets if t in names]}
                for name, targets in self.registry.fallbacks.items()
                if name in names
            ]
            router = litellm.Router(
                model_list=[self._deployment(s, keys.get(s.name)) for s in chain],
                fallbacks=fallbacks,
                num_retries=self.retries,
                retry_after=self.retry_after,
                disable_cooldowns=True,
                max_fallbacks=max(1, len(chain)),
            )
            if len(self._routers) > 64:
                self._routers.clear()
            self._routers[cache_key] = router
        return router

    def _deployment(self, spec: ModelSpec, key: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"model": spec.model, "timeout": self.registry.timeout(spec), "max_retries": 0}
        if spec.api_base:
            params["api_base"] = spec.api_base
        if key is not None:
            params["api_key"] = key
        elif spec.api_base:
            params["api_key"] = LOCAL_PLACEHOLDER_KEY
        if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
            # Configured prices go to litellm too: without them it searches its cost map for a model it does
            # not know on every call (a third of a call's CPU for a local model), only to compute zero.
            params["input_cost_per_token"] = spec.input_cost_per_token or 0.0
            params["output_cost_per_token"] = spec.output_cost_per_token or 0.0
        return {"model_name": spec.name, "litellm_params": params, "model_info": {"id": spec.name}}

    def _answered_by(self, response: Any, chain: list[ModelSpec]) -> ModelSpec:
        hidden = getattr(response, "_hidden_params", None) or {}
        model_id = hidden.get("model_id")
        return next((s for s in chain if s.name == model_id), chain[0])

    def _from_response(self, response: Any, chain: list[ModelSpec]) -> Completion:
        choice = response.choices[0]
        message = choice.message
        calls = [
            ToolCallOut(id=c.id or f"call_{i}", name=c.function.name or "", arguments=c.function.arguments or "")
            for i, c in enumerate(message.tool_calls or [])
        ]
        usage = getattr(response, "usage", None)
        return Completion(
            answered_by=self._answered_by(response, chain),
            response_model=getattr(response, "model", None),
            content=message.content,
            tool_calls=calls,
            finish_reason=choice.finish_reason,
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def _stream(
        self, router: Any, params: dict[str, Any], chain: list[ModelSpec], on_delta: DeltaSink
    ) -> Completion:
        stream = await router.acompletion(**params, stream=True, stream_options={"include_usage": True})
        text: list[str] = []
        builders: dict[int, _ToolCallBuilder] = {}
        finish: str | None = None
        model: str | None = None
        tokens_in = tokens_out = 0
        async for chunk in stream:
            model = getattr(chunk, "model", None) or model
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0) or tokens_in
                tokens_out = int(getattr(usage, "completion_tokens", 0) or 0) or tokens_out
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                text.append(delta.content)
                await on_delta(delta.content)
            for call in delta.tool_calls or []:
                builder = builders.setdefault(call.index or 0, _ToolCallBuilder())
                builder.id = call.id or builder.id
                if call.function is not None:
                    builder.name = call.function.name or builder.name
                    if call.function.arguments:
                        builder.arguments.append(call.function.arguments)
        calls = [
            ToolCallOut(id=b.id or f"call_{i}", name=b.name, arguments="".join(b.arguments))
            for i, b in sorted(builders.items())
        ]
        return Completion(
            answered_by=self._answered_by(stream, chain),
            response_model=model,
            content="".join(text) if text else None,
            tool_calls=calls,
            finish_reason=finish,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )


def cost_usd(spec: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """Configured prices win; else litellm's (local) cost map; unknown models cost 0."""
    if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
        return input_tokens * (spec.input_cost_per_token or 0.0) + output_tokens * (spec.output_cost_per_token or 0.0)
    if _litellm is None:
        return 0.0
    try:
        prompt, completion = _litellm.cost_per_token(
            model=spec.model, prompt_tokens=input_tokens, completion_tokens=output_tokens
        )
    except Exception:
        return 0.0
    return float(prompt) + float(completion)


_SECRETISH = re.compile(r"(sk|key|token)[-_A-Za-z0-9]{8,}", re.IGNORECASE)


def scrub(text: str, keys: dict[str, str | None], redact: Redact = verbatim) -> str:
    """First line of a provider message, bounded, with every known key and key-like token removed."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for key in keys.values():
        if key:
            line = line.replace(key, "[redacted]")
    line = _SECRETISH.sub("[redacted]", line)
    line = re.sub(r"^litellm\.\w+:\s*", "", line)
    return redact(line)[:300]


def _is_bad_json(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, json.JSONDecodeError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Expecting value" in str(exc) or "JSONDecodeError" in str(exc) or "Unterminated string" in str(exc)


def classify(
    litellm: ModuleType, exc: Exception, spec: ModelSpec, keys: dict[str, str | None], redact: Redact = verbatim
) -> LLMError:
    """Map a litellm/openai exception to a stable code and a short message naming the model, never the key."""
    where = f"model {spec.name!r} ({spec.model})"
    detail = scrub(str(exc), keys, redact)
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return LLMError("llm_auth_failed", f"{where}: the provider rejected the API key; check its key source")
    if isinstance(exc, litellm.RateLimitError):
        return LLMError("llm_rate_limited", f"{where}: rate limited after retries: {detail}", retryable=True)
    if isinstance(exc, litellm.Timeout):
        timeout = _timeout_text(exc)
        return LLMError("llm_timeout", f"{where}: no answer within {timeout} (after retries)", retryable=True)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return LLMError("llm_context_too_long", f"{where}: the conversation exceeds the context window")
    if isinstance(exc, litellm.NotFoundError):
        return LLMError("llm_model_not_found", f"{where}: the provider does not know this model: {detail}")
    if isinstance(exc, litellm.BadRequestError):
        return LLMError("llm_bad_request", f"{where}: the provider refused the request: {detail}")
    if _is_bad_json(exc):
        return LLMError("llm_bad_response", f"{where}: the provider's response was not valid JSON", retryable=True)
    if isinstance(exc, litellm.APIConnectionError):
        return LLMError("llm_unreachable", f"{where}: could not reach the provider: {detail}", retryable=True)
    if isinstance(exc, litellm.InternalServerError | litellm.ServiceUnavailableError | litellm.APIError):
        return LLMError("llm_provider_error", f"{where}: provider error: {detail}", retryable=True)
    return LLMError("llm_error", f"{where}: {type(exc).__name__}: {detail}")


def _timeout_text(exc: Exception) -> str:
    match = re.search(r"timeout value=([0-9.]+)", str(exc))
    return f"{match.group(1)}s" if match else "the timeout"
