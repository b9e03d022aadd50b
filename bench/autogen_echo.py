"""autogen-core's side of ``bench/bus.py``: a ``RoutedAgent`` answering ``Ask`` with ``Answer``.

No ``from __future__ import annotations`` here: autogen-core reads the handler's type hints at
decoration time, and string annotations of local classes would not resolve.
"""

from dataclasses import dataclass

from autogen_core import AgentId, MessageContext, RoutedAgent, SingleThreadedAgentRuntime, message_handler


@dataclass
class Ask:
    n: int


@dataclass
class Answer:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ask(self, message: Ask, ctx: MessageContext) -> Answer:
        return Answer(message.n + 1)


ECHO = AgentId("echo", "default")


async def started_runtime() -> SingleThreadedAgentRuntime:
    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    return runtime
