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

from bus.envelope import Envelope, Principal

ToolResult = JsonValue | BaseModel
ToolFunc = Callable[..., Awaitable[ToolResult]]

_TOOL_ATTR = "__mad_tool__"


@dataclass(frozen=True)
class Call:
    """Who asked for a tool call, for whom, and in which conversation (for authority, audit and routing)."""

    envelope: Envelope
    via_llm: bool = False

    @property
    def conversation_id(self) -> str | None:
        return self.envelope.conversation_id

    @property
    def sender(self) -> str:
        """The address that sent the request: a MAD (stamped by the runtime) or a person at the gateway."""
        return self.envelope.sender

    @property
    def principal(self) -> Principal:
        """Whom the call serves: what it may do is what both the sender and this principal may do."""
        return self.envelope.principal

    @property
    def turn(self) -> str | None:
        return self.envelope.turn


@dataclass(frozen=True)
class Tool:
    """One tool: name, description, argument model and the bound coroutine function."""

    name: str
    description: str
    args_model: type[BaseModel]
    func: ToolFunc
    wants_call: bool
    operator: bool = False
    """An operator action: runs only for an operator principal, by command, never offered to an LLM."""
    internal: bool = False
    """For other MADs' code only (e.g. McNamara's ``record``): never a person's command, never offered to an LLM."""
    llm: bool = True
    """Offered to an LLM at all; off for tools whose results are bytes, not something to reason about."""

    @property
    def for_llm(self) -> bool:
        """Whether an Imperator may offer this tool to its LLM."""
        return self.llm and not (self.operator or self.internal)

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
    def from_model(
        cls,
        name: str,
        description: str,
        args_model: type[BaseModel],
        func: ToolFunc,
        *,
        operator: bool = False,
        internal: bool = False,
        llm: bool = True,
    ) -> Tool:
        """A tool whose argument model is given explicitly (built at run time, e.g. bounded by configuration).

        ``func`` takes ``(args)`` or ``(args, call)``; it is called as it is, never rewritten.
        """
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {name} must be async")
        if not (inspect.isclass(args_model) and issubclass(args_model, BaseModel)):
            raise TypeError(f"tool {name}: the argument model must be a pydantic model")
        return cls(
            name=name,
            description=description,
            args_model=args_model,
            func=func,
            wants_call=_takes_call(func),
            operator=operator,
            internal=internal,
            llm=llm,
        )

    def descriptor(self) -> dict[str, Any]:
        """The MCP ``Tool`` shape: name, description, inputSchema; plus who may run it when not everyone."""
        described: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema(),
        }
        if self.operator:
            described["operator"] = True
        if self.internal:
            described["internal"] = True
        return described

    def openai_function(self) -> dict[str, Any]:
        """The same tool in the OpenAI/litellm ``tools`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema()},
        }


def tool(
    description: str | None = None,
    *,
    name: str | None = None,
    operator: bool = False,
    internal: bool = False,
    llm: bool = True,
) -> Callable[[ToolFunc], ToolFunc]:
    """Mark a MAD method as a tool. The first parameter's annotation is the argument model.

    ``operator=True`` makes it an operator action: the runtime runs it only for an operator
    principal and only by command; an Imperator never sees it. ``internal=True`` makes it a
    tool for other MADs' code only: no person's command and no LLM reaches it. ``llm=False`` keeps
    a tool people and MADs may run away from LLMs (its result is bytes, say, not text to reason about).
    """

    def mark(func: ToolFunc) -> ToolFunc:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {func.__name__} must be async")
        doc = description or inspect.getdoc(func) or func.__name__
        setattr(func, _TOOL_ATTR, (name or func.__name__, doc, operator, internal, llm))
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
            tool_name, description, operator, internal, llm = marker
            tools[tool_name] = make_tool(tool_name, description, bound, operator=operator, internal=internal, llm=llm)
    return tools


def declared_tools(cls: type) -> dict[str, Tool]:
    """Every ``@tool`` method declared on the class ``cls`` (unbound): what a MAD offers, without an instance.

    Tools a MAD builds at run time with :meth:`Tool.from_model` are not among them.
    """
    tools: dict[str, Tool] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            marker = getattr(value, _TOOL_ATTR, None)
            if marker is None:
                continue
            tool_name, description, operator, internal, llm = marker
            tools[tool_name] = make_tool(tool_name, description, value, operator=operator, internal=internal, llm=llm)
    return tools


def make_tool(
    name: str, description: str, func: ToolFunc, *, operator: bool = False, internal: bool = False, llm: bool = True
) -> Tool:
    """A :class:`Tool` from a (bound) coroutine function ``(args[, call])`` whose first parameter is
    annotated with its argument model."""
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if not params:
        raise TypeError(f"tool {name} needs an argument-model parameter")
    model = get_type_hints(func).get(params[0].name)
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise TypeError(f"tool {name}: first parameter must be annotated with a pydantic model")
    return Tool.from_model(name, description, model, func, operator=operator, internal=internal, llm=llm)


def _takes_call(func: ToolFunc) -> bool:
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if not 1 <= len(params) <= 2:
        raise TypeError(f"{func.__name__} must take (args) or (args, call)")
    return len(params) == 2
