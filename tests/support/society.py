"""A scripted LLM that plays every role of Hopper's society, and stories for it to work.

The responder reads the request (the role's system prompt, the task title in the prompt) and answers
what that role should: the engineer the task's code, the reviewer an approval. With ``fault_rate``
it is wrong that often, in the ways the issue lists: invalid JSON, an unknown tool, an output that
misses the state's schema, code that fails its tests, a forgotten completion (an empty answer) and
a timeout (a slow answer past the role's step budget).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support.llm_server import Hang, RecordedRequest, Reply, ToolCall, Turn

TASK_TITLE = re.compile(r"^Task: (?P<title>.+)$", re.MULTILINE)

CODE = {
    "parse": "def parse_numbers(text):\n    return [int(part) for part in text.split(',') if part.strip()]\n",
    "total": "from parse import parse_numbers\n\n\ndef total(text):\n    return sum(parse_numbers(text))\n",
    "report": "from total import total\n\n\ndef report(text):\n    return f'total={total(text)}'\n",
}
WRONG = {
    "parse": "def parse_numbers(text):\n    return []\n",
    "total": "def total(text):\n    return 0\n",
    "report": "def report(text):\n    return 'total=?'\n",
}
TESTS = {
    "parse": (
        "import unittest\nfrom parse import parse_numbers\n\n\nclass ParseTests(unittest.TestCase):\n"
        "    def test_numbers(self):\n        self.assertEqual(parse_numbers('1,2,3'), [1, 2, 3])\n\n"
        "    def test_empty(self):\n        self.assertEqual(parse_numbers(''), [])\n"
    ),
    "total": (
        "import unittest\nfrom total import total\n\n\nclass TotalTests(unittest.TestCase):\n"
        "    def test_total(self):\n        self.assertEqual(total('1,2,3'), 6)\n"
    ),
    "report": (
        "import unittest\nfrom report import report\n\n\nclass ReportTests(unittest.TestCase):\n"
        "    def test_report(self):\n        self.assertEqual(report('4,5'), 'total=9')\n"
    ),
}
FAULTS = ("invalid_json", "unknown_tool", "schema_miss", "failing_code", "forgotten", "timeout")


def story(project: str, title: str = "numbers", priority: int = 0) -> dict[str, Any]:
    """Three dependent tasks: parse -> total -> report, each with its tests."""
    return {
        "title": title,
        "text": "Sum comma-separated numbers and report the total.",
        "acceptance": ["report('4,5') == 'total=9'"],
        "project": project,
        "priority": priority,
        "tasks": [
            {"key": "parse", "title": "parse numbers", "tests": TESTS["parse"]},
            {"key": "total", "title": "total numbers", "depends_on": ["parse"], "tests": TESTS["total"]},
            {"key": "report", "title": "report the total", "depends_on": ["total"], "tests": TESTS["report"]},
        ],
    }


KEYS = {"parse numbers": "parse", "total numbers": "total", "report the total": "report"}


@dataclass
class SocietyLLM:
    """The responder: ``llm_server.respond_with(SocietyLLM(...))``."""

    fault_rate: float = 0.0
    seed: int = 7
    hang_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    roles: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    hold: tuple[str, str] | None = None
    """(role, task key) whose first request is never answered (the crash test kills the process meanwhile)."""
    held: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def __call__(self, request: RecordedRequest) -> Turn:
        system = next((m.get("content", "") for m in request.messages if m.get("role") == "system"), "")
        text = request.last_user_text
        match = TASK_TITLE.search(text)
        key = KEYS.get(match["title"].strip(), "parse") if match else "parse"
        role = "engineer" if "The engineer" in str(system) else "reviewer" if "The reviewer" in str(system) else "?"
        self.roles[role] += 1
        self.calls[(role, key)] += 1
        if self.hold == (role, key) and not self.held:
            self.held.append(request)
            return Hang()
        if request.messages[-1].get("role") == "tool":
            # The Imperator corrected a bad tool call: answer properly now.
            return Reply(text=self.answer(role, key))
        if self.fault_rate and self.random.random() < self.fault_rate:
            fault = self.fault_for(role)
            self.faults[fault] += 1
            if fault == "invalid_json":
                return Reply(text='{"outcome": "submit", "files": {')
            if fault == "unknown_tool":
                return ToolCall(name="deploy_to_production", arguments={"now": True})
            if fault == "schema_miss":
                return Reply(text=json.dumps({"outcome": "ship_it", "files": "everything"}))
            if fault == "failing_code":
                return Reply(text=json.dumps({"outcome": "submit", "files": {f"{key}.py": WRONG[key]}}))
            if fault == "forgotten":
                return Reply(text=json.dumps({"files": {f"{key}.py": CODE[key]}}))
            if fault == "timeout":
                return Hang()
        return Reply(text=self.answer(role, key))

    def fault_for(self, role: str) -> str:
        """A fault this role can make: each kind not injected yet comes first, then a random one.

        Which request draws a fault depends on the order concurrent stories reach the LLM, so a purely random
        kind could leave one out of a whole run (a run without ``failing_code`` has no red tests to refuse);
        every kind is injected at least once as soon as the role that can make it draws a fault.
        """
        kinds = FAULTS if role == "engineer" else tuple(f for f in FAULTS if f != "failing_code")
        fresh = [f for f in kinds if not self.faults[f]]
        return fresh[0] if fresh else self.random.choice(kinds)

    def answer(self, role: str, key: str) -> str:
        if role == "engineer":
            return json.dumps({"outcome": "submit", "files": {f"{key}.py": CODE[key]}, "notes": "done"})
        return json.dumps({"outcome": "approve", "remarks": "clear and tested"})
