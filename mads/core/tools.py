"""Typed tools: async functions with a pydantic argument model, described MCP-style.

A tool is declared with :func:`tool` on a MAD method whose first parameter is a
pydantic model. The model *is* the tool's JSON Schema (``inputSchema``), so a
command part and an LLM's tool call are validated by the same code, and the
descriptor an LLM sees can never drift from what the tool accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, JsonValue

from bus.envelope import Envelope

ToolResult = JsonValue | BaseModel
ToolFunc = Callable[..., Awaitable[ToolResult]]

_TOOL_ATTR = "__mad_tool__"


@dataclass(frozen=True)
class Call:
    """Who asked for a tool call and in which conversation (for audit and routing)."""

    envelope: Envelope
    via_llm: bool = False

    @property
    def conversation_id(self) -> str | None:
        return self.envelope.conversation_id

    @property
    def sender(self) -> str:
        return self.envelope.sender


@dataclass(frozen=True)
class Tool:
    """One tool: name, description, argument model and the bound coroutine function."""

    name: str
    description: str
    args_model: type[BaseModel]
    func: ToolFunc
    wants_call: bool

    async def invoke(self, args: BaseModel, call: Call) -> JsonValue:
        result = await (self.func(args, call) if self.wants_call else self.func(args))
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json")
        return result

    def input_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.setdefault("additionalProperties", False)
        return schema

    @classmethod
    def from_model(cls, name: str, description: str, args_model: type[BaseModel], func: ToolFunc) -> Tool:
        """A tool whose argument model is given explicitly (built at run time, e.g. bounded by configuration).

        ``func`` takes ``(args)`` or ``(args, call)``; it is called as it is, never rewritten.
        """
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {name} must be async")
        if not (inspect.isclass(args_model) and issubclass(args_model, BaseModel)):
            raise TypeError(f"tool {name}: the argument model must be a pydantic model")
        return cls(name=name, description=description, args_model=args_model, func=func, wants_call=_takes_call(func))

    def descriptor(self) -> dict[str, Any]:
        """The MCP ``Tool`` shape: name, description, inputSchema."""
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema()}

    def openai_function(self) -> dict[str, Any]:
        """The same tool in the OpenAI/litellm ``tools`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema()},
        }


def tool(description: str | None = None, *, name: str | None = None) -> Callable[[ToolFunc], ToolFunc]:
    """Mark a MAD method as a tool. The first parameter's annotation is the argument model."""

    def mark(func: ToolFunc) -> ToolFunc:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {func.__name__} must be async")
        setattr(func, _TOOL_ATTR, (name or func.__name__, description or inspect.getdoc(func) or func.__name__))
        return func

    return mark


def collect_tools(owner: object) -> dict[str, Tool]:
    """Every ``@tool`` method of ``owner``, bound, with its argument model read from its signature."""
    tools: dict[str, Tool] = {}
    for klass in reversed(type(owner).__mro__):
        for attr, value in vars(klass).items():
            marker = getattr(value, _TOOL_ATTR, None)
            if marker is None:
                continue
            bound = getattr(owner, attr)
            tools[marker[0]] = make_tool(marker[0], marker[1], bound)
    return tools


def make_tool(name: str, description: str, func: ToolFunc) -> Tool:
    """A :class:`Tool` from a (bound) coroutine function ``(args[, call])`` whose first parameter is
    annotated with its argument model."""
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if not params:
        raise TypeError(f"tool {name} needs an argument-model parameter")
    model = get_type_hints(func).get(params[0].name)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(f"tool {name}: first parameter must be annotated with a pydantic model")
    return Tool.from_model(name, description, model, func)


def _takes_call(func: ToolFunc) -> bool:
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if not 1 <= len(params) <= 2:
        raise TypeError(f"{func.__name__} must take (args) or (args, call)")
    return len(params) == 2
