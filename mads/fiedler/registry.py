"""The model registry: configured models, or models discovered from well-known env vars.

Discovery runs only when ``[fiedler].models`` is empty, so configuration always wins
and an operator never gets a surprise provider. The registry also answers "which
model serves this role" and "what do I tell someone who has no LLM at all".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mads.fiedler.keys import EnvKey, KeySource, NoKey, SecretReader, TuringKey
from mads.fiedler.schemas import FiedlerConfig, ModelSpec, ModelsReport, ModelView

LOCAL_BASE_ENV = "MAD_LLM_API_BASE"
LOCAL_MODEL_ENV = "MAD_LLM_MODEL"
LOCAL_KEY_ENV = "MAD_LLM_API_KEY"

WELL_KNOWN: tuple[tuple[str, str, str], ...] = (
    ("OPENAI_API_KEY", "openai", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic", "anthropic/claude-haiku-4-5"),
    ("GEMINI_API_KEY", "gemini", "gemini/gemini-2.0-flash"),
)
"""(env var holding the key, registry name, litellm model) discovered in this order after the local server."""

HOW_TO_CONFIGURE = """\
No LLM is configured, so I can only run commands (tools called by name), not understand prose.
To enable prose, give Fiedler a model in one of these ways and restart:

1. An OpenAI-compatible server (Ollama, llama.cpp, vLLM), via the environment:
     export MAD_LLM_API_BASE=http://127.0.0.1:11434/v1
     export MAD_LLM_MODEL=llama3.1          # the name the server knows
     export MAD_LLM_API_KEY=...             # only if the server wants one

2. A hosted provider key in the environment: OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY.

3. The configuration file:
     [fiedler]
     retries = 2

     [[fiedler.models]]
     name = "local"
     model = "openai/llama3.1"
     api_base = "http://127.0.0.1:11434/v1"
     roles = ["imperator"]
"""


def discover(env: Mapping[str, str]) -> list[ModelSpec]:
    """Models implied by the environment, local server first (it is what the operator set up on purpose)."""
    found: list[ModelSpec] = []
    base, model = env.get(LOCAL_BASE_ENV), env.get(LOCAL_MODEL_ENV)
    if base and model:
        found.append(
            ModelSpec(
                name="local",
                model=model if "/" in model else f"openai/{model}",
                api_base=base,
                api_key_env=LOCAL_KEY_ENV if env.get(LOCAL_KEY_ENV) else None,
            )
        )
    for var, name, litellm_model in WELL_KNOWN:
        if env.get(var):
            found.append(ModelSpec(name=name, model=litellm_model, api_key_env=var))
    return found


class UnknownModel(LookupError):
    """A caller named a model the registry does not hold."""


@dataclass
class Registry:
    models: list[ModelSpec]
    roles: dict[str, str]
    fallbacks: dict[str, list[str]]
    source: Literal["config", "environment", "none"]
    default_timeout: float
    by_name: dict[str, ModelSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {m.name: m for m in self.models}

    @classmethod
    def build(cls, config: FiedlerConfig, env: Mapping[str, str] | None = None) -> Registry:
        if config.models:
            return cls(config.models, dict(config.roles), dict(config.fallbacks), "config", config.timeout)
        found = discover(os.environ if env is None else env)
        return cls(found, {}, {}, "environment" if found else "none", config.timeout)

    @property
    def configured(self) -> bool:
        return bool(self.models)

    def select(self, role: str, model: str | None = None) -> ModelSpec:
        """Explicit name, else the role's default, else the first model serving the role, else the first model."""
        if model is not None:
            spec = self.by_name.get(model)
            if spec is None:
                raise UnknownModel(f"unknown model {model!r} (models: {', '.join(self.by_name) or 'none'})")
            return spec
        if role in self.roles:
            return self.by_name[self.roles[role]]
        for spec in self.models:
            if role in spec.roles:
                return spec
        return self.models[0]

    def serving(self, role: str) -> ModelSpec | None:
        """The model configured for ``role`` (by ``roles`` or a model's own ``roles``), or None: no fallback to
        another model, for roles such as transcription that a chat model cannot fill."""
        if role in self.roles:
            return self.by_name[self.roles[role]]
        return next((spec for spec in self.models if role in spec.roles), None)

    def timeout(self, spec: ModelSpec) -> float:
        return spec.timeout or self.default_timeout

    def key_source(self, spec: ModelSpec, reader: SecretReader) -> KeySource:
        if spec.api_key_env:
            return EnvKey(spec.api_key_env)
        if spec.api_key_secret:
            return TuringKey(spec.api_key_secret, reader)
        return NoKey()

    def chain(self, spec: ModelSpec) -> list[ModelSpec]:
        """The model and every model its fallbacks can reach, in order (each once)."""
        order: list[str] = []
        pending = [spec.name]
        while pending:
            name = pending.pop(0)
            if name in order:
                continue
            order.append(name)
            pending.extend(self.fallbacks.get(name, []))
        return [self.by_name[n] for n in order]

    def report(self, reader: SecretReader) -> ModelsReport:
        views = []
        for spec in self.models:
            keys = self.key_source(spec, reader)
            views.append(
                ModelView(
                    name=spec.name,
                    model=spec.model,
                    provider=spec.provider,
                    api_base=spec.api_base,
                    key_source=keys.describe(),
                    key_available=keys.available(),
                    roles=spec.roles,
                    max_tokens=spec.max_tokens,
                    timeout=self.timeout(spec),
                    input_cost_per_token=spec.input_cost_per_token,
                    output_cost_per_token=spec.output_cost_per_token,
                    fallbacks=self.fallbacks.get(spec.name, []),
                )
            )
        roles = dict(self.roles)
        for spec in self.models:
            for role in spec.roles:
                roles.setdefault(role, spec.name)
        return ModelsReport(
            configured=self.configured,
            source=self.source,
            models=views,
            roles=roles,
            how_to_configure=None if self.configured else HOW_TO_CONFIGURE,
        )
