"""Where an API key comes from, resolved at call time so a rotated key is picked up without a restart.

A :class:`KeySource` never stores the key: it reads it when a call needs it. Env vars
work today; ``TuringKey`` reads a secret path from Turing over the bus (tool
``get``), so keys can leave the environment once Turing serves them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from pydantic import JsonValue

SecretReader = Callable[[str], Awaitable[JsonValue]]
"""Reads a Turing secret path over the bus; raises on failure."""


class KeyUnavailable(Exception):
    """The key's source exists in config but yields nothing right now (message names the source, never a value)."""


class KeySource(ABC):
    @abstractmethod
    async def resolve(self) -> str | None:
        """The key, or ``None`` when the model needs none. Raises :class:`KeyUnavailable`."""

    @abstractmethod
    def describe(self) -> str:
        """Where the key comes from, safe to show (``env:OPENAI_API_KEY``)."""

    def available(self) -> bool:
        """Cheap check for the ``models`` report; ``True`` when it cannot be known without a call."""
        return True


class NoKey(KeySource):
    """Local servers (Ollama, llama.cpp) need no key."""

    async def resolve(self) -> str | None:
        return None

    def describe(self) -> str:
        return "none"


class EnvKey(KeySource):
    def __init__(self, var: str) -> None:
        self.var = var

    async def resolve(self) -> str | None:
        value = os.environ.get(self.var)
        if not value:
            raise KeyUnavailable(f"environment variable {self.var} is not set")
        return value

    def describe(self) -> str:
        return f"env:{self.var}"

    def available(self) -> bool:
        return bool(os.environ.get(self.var))


class TuringKey(KeySource):
    """A secret held by Turing, read over the bus at call time."""

    def __init__(self, path: str, reader: SecretReader) -> None:
        self.path = path
        self.reader = reader

    async def resolve(self) -> str | None:
        try:
            value = await self.reader(self.path)
        except Exception as exc:
            reason = getattr(getattr(exc, "error", None), "code", None) or type(exc).__name__
            raise KeyUnavailable(f"secret {self.path!r} could not be read from turing ({reason})") from None
        if isinstance(value, dict):
            value = value.get("value")
        if not isinstance(value, str) or not value:
            raise KeyUnavailable(f"secret {self.path!r} from turing is empty or not a string")
        return value

    def describe(self) -> str:
        return f"turing:{self.path}"
