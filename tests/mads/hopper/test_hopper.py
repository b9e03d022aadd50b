"""Hopper runs code in the sandbox through the bus: run_python (granted by configuration), run_tests,
limits within the configured maxima, limit events, and grants that follow the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from mads.core.settings import ConfigError, load_settings
from mads.host import Host
from tests.mads.hopper.conftest import HOPPER_MADS
from tests.support.ecosystem import Running
from tests.support.sandbox_ecosystem import EventWatch, call_tool, result_of, sandbox_ecosystem, sandbox_settings
from tests.support.wasm_cache import CompiledCache

TESTS = """
import unittest
from solution import add

class AddTests(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(2, 3), 5)

    def test_negative(self):
        self.assertEqual(add(-2, -3), -5)
"""


async def test_run_python_returns_the_structured_result(hopper: Running) -> None:
    reply = await call_tool(
        hopper.host.bus,
        "hopper",
        "run_python",
        {
            "code": "import sys\nprint(open('/input/data.txt').read().upper())\nopen('out.txt', 'w').write('made')\n"
            "print('warn', file=sys.stderr)\nsys.exit(3)",
            "input_files": {"data.txt": "hello"},
            "collect_files": True,
        },
    )
    result = result_of(reply)
    assert result["stdout"] == "HELLO\n" and result["stderr"] == "warn\n"
    assert result["exit_code"] == 3 and result["limit_hit"] is None
    assert result["fuel_used"] > 0 and result["duration_ms"] > 0
    assert [(f["path"], f["content"]) for f in result["files"]] == [("out.txt", "made")]


async def test_limits_above_the_maxima_are_refused_naming_the_field(hopper: Running) -> None:
    for limits, field in (
        ({"timeout_s": 6}, "content.0.arguments.limits.timeout_s"),
        ({"memory_bytes": 1024}, "content.0.arguments.limits.memory_bytes"),
        ({"fuel": 10**12}, "content.0.arguments.limits.fuel"),
        ({"wall": 1}, "content.0.arguments.limits.wall"),
    ):
        reply = await call_tool(hopper.host.bus, "hopper", "run_python", {"code": "print(1)", "limits": limits})
        assert reply.error is not None and reply.error.code == "invalid_arguments", limits
        assert [f.field for f in reply.error.fields] == [field]
    bad_name = await call_tool(hopper.host.bus, "hopper", "run_python", {"code": "1", "input_files": {"../x": "y"}})
    assert bad_name.error is not None and bad_name.error.code == "invalid_arguments"
    assert [f.field for f in bad_name.error.fields] == ["content.0.arguments.input_files"]


async def test_a_limit_hit_is_published_not_as_a_violation(hopper: Running) -> None:
    limits = await EventWatch.on(hopper.host.bus, "events.sandbox_limit")
    try:
        reply = await call_tool(
            hopper.host.bus,
            "hopper",
            "run_python",
            {"code": "while True: pass", "limits": {"timeout_s": 0.5}},
            conversation_id="c1",
        )
        assert result_of(reply)["limit_hit"] == "timeout"
        event = await limits.wait_for(lambda e: e["limit"] == "timeout")
    finally:
        await limits.close()
    assert event["mad"] == "hopper" and event["tool"] == "run_python"
    assert event["violation"] is False and event["conversation_id"] == "c1"
    assert event["fuel_used"] is None  # not counted after a timeout: no wrong figure in the event


async def test_run_tests_counts_passes_and_failures(hopper: Running) -> None:
    passing = result_of(
        await call_tool(
            hopper.host.bus, "hopper", "run_tests", {"solution": "def add(a, b):\n    return a + b\n", "tests": TESTS}
        )
    )
    assert passing["ok"] is True and passing["tests_run"] == 2 and passing["failures"] == 0
    failing = result_of(
        await call_tool(
            hopper.host.bus, "hopper", "run_tests", {"solution": "def add(a, b):\n    return a - b\n", "tests": TESTS}
        )
    )
    assert failing["ok"] is False and failing["failures"] == 2
    assert failing["failed_tests"] == ["test_solution.AddTests.test_negative", "test_solution.AddTests.test_small"]
    assert "AssertionError" in failing["report"]
    broken = result_of(
        await call_tool(hopper.host.bus, "hopper", "run_tests", {"solution": "def add(a, b) return", "tests": TESTS})
    )
    assert broken["ok"] is False and broken["errors"] == 1 and "SyntaxError" in broken["report"]


async def test_sandbox_status_reports_the_cached_module(hopper: Running) -> None:
    status = result_of(await call_tool(hopper.host.bus, "hopper", "sandbox_status", {}))
    assert status["granted"] is True
    await hopper.host.sandbox.ready()
    status = result_of(await call_tool(hopper.host.bus, "hopper", "sandbox_status", {}))
    assert status["state"] == "ready" and status["compiled_from_cache"] is True


async def test_grants_follow_the_configuration(tmp_path: Path, compiled_cache: CompiledCache) -> None:
    settings = sandbox_settings(tmp_path / "data", mads=HOPPER_MADS, sandbox={"grants": ["rogers"]})
    async with sandbox_ecosystem(tmp_path / "data", compiled_cache, settings) as eco:
        assert "run_python" not in eco.host.mads["hopper"].tools()
        assert "run_tests" not in eco.host.mads["hopper"].tools()
        denied = await call_tool(eco.host.bus, "hopper", "run_python", {"code": "print(1)"})
        assert denied.error is not None and denied.error.code == "unknown_tool"
        granted = await call_tool(eco.host.bus, "rogers", "run_python", {"code": "print(6 * 7)"})
        assert result_of(granted)["stdout"] == "42\n"
        status = result_of(await call_tool(eco.host.bus, "hopper", "sandbox_status", {}))
        assert status["granted"] is False


def test_no_sandbox_without_a_grant_or_a_user(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path / "data", mads=["rogers", "fiedler", "grace"])
    assert Host(settings).sandbox is None


def test_bad_sandbox_configuration_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sandbox\.grants: unknown MAD\(s\) nobody"):
        Host(sandbox_settings(tmp_path / "data", sandbox={"grants": ["nobody"]}))
    cases = {
        "maxima": ({"timeout_s": -1}, r"sandbox\.maxima: .*timeout_s"),
        "max_concurrency": (0, r"sandbox\.max_concurrency"),
    }
    for key, (value, pattern) in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            load_settings(None, environ={}, overrides={"sandbox": {key: value}})
    with pytest.raises(ConfigError, match=r"marco\.allow_hosts: .*'not a host!'"):
        Host(sandbox_settings(tmp_path / "data", marco={"allow_hosts": ["not a host!"]}))
