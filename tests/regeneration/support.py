"""What the regeneration tests share: the operator, the pinned scripted model, prepared changes to McNamara."""

from __future__ import annotations

import json
from typing import Any

from bus.envelope import Principal
from regeneration.pinning import PinnedModel
from tests.support.llm_server import Reply

OPERATOR = Principal(kind="operator", name="ops")
PINNED = PinnedModel(name="scripted", model_id="openai/scripted", temperature=0.0, max_tokens=4000)

PING = 'def ping() -> str:\n    """McNamara answers."""\n    return "pong"\n'
PING_TEST = 'from mads.mcnamara.ping import ping\n\n\ndef test_ping() -> None:\n    assert ping() == "pong"\n'


def proposal(files: dict[str, str | None], message: str = "McNamara answers ping", **extra: Any) -> Reply:
    return Reply(text=json.dumps({"outcome": "proposed", "message": message, "files": files, **extra}))


GOOD = proposal({"mads/mcnamara/ping.py": PING, "tests/mads/mcnamara/test_ping.py": PING_TEST})


def ping_tests(mad: str) -> list[str]:
    return [f"tests/mads/{mad}/test_ping.py"]
