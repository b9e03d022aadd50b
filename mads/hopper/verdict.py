"""The test verdict: runs a task's tests on an attempt's code in the sandbox and decides green or red,
in a way the code under test cannot forge.

The host gives the cell a fresh random key (``/input/verdict.key``); the guest driver
(:mod:`mads.hopper.verdict_driver`) keeps it where guest code cannot reach and signs, once, the
report its own code hands over. The host accepts the run as green only if stdout holds exactly one
marker line, it verifies under that key, the report says nothing was tampered with, no test failed,
erred or was skipped, and the passed tests are exactly the tests the host itself found in the test
source (by parsing it here, never running it). Anything else — no line, a line that does not verify,
two lines, a missing test — is red, with the reason.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from sandbox import RunResult

if TYPE_CHECKING:
    from mads.core.base import MAD
    from mads.core.sandbox_capability import SandboxCapability
    from mads.core.tools import Call

DRIVER = Path(__file__).with_name("verdict_driver.py").read_text(encoding="utf-8")
MARKER = "@@hopper-verdict@@"
TEST_MODULE = "test_solution"


class Verdict(BaseModel):
    """Green or red, why, and what the run showed (the trail hands this to the next attempt)."""

    model_config = ConfigDict(extra="forbid")

    green: bool
    reason: str
    expected: list[str] = Field(default_factory=list)
    passed: list[str] = Field(default_factory=list)
    tests_run: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    report: str = Field("", description="failing tests and their errors (stderr tail)")
    exit_code: int | None = None
    limit_hit: str | None = None


def expected_tests(source: str) -> list[str]:
    """Test ids the host finds in ``source``: ``test_solution.<Class>.<test_method>`` for every top-level
    class deriving from a ``...TestCase`` name. A source that does not parse has none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases]
        if not any(name.endswith("TestCase") for name in bases):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                found.append(f"{TEST_MODULE}.{node.name}.{item.name}")
    return sorted(set(found))


def judge(result: RunResult, key: bytes, expected: list[str]) -> Verdict:
    """The verdict of one driver run under ``key``."""
    base = {
        "expected": expected,
        "report": result.stderr[-4000:],
        "exit_code": result.exit_code,
        "limit_hit": result.limit_hit,
    }
    if not expected:
        return Verdict(green=False, reason="the tests define no test method", **base)
    if result.limit_hit is not None:
        return Verdict(green=False, reason=f"the run hit its {result.limit_hit} limit", **base)
    lines = [line for line in result.stdout.split("\n") if MARKER in line]
    signed = [body for line in lines if (body := _verified(line, key)) is not None]
    if len(lines) != len(signed):
        return Verdict(green=False, reason="a verdict line does not verify: forged output", **base)
    if len(signed) != 1:
        return Verdict(green=False, reason=f"{len(signed)} signed verdict lines (exactly one expected)", **base)
    reports = signed[0]
    fields = dict(part.partition("=")[::2] for part in reports.split("\x1f"))
    passed = sorted(p for p in fields.get("passed", "").split(",") if p)
    counts = {
        name: int(fields.get(key_, "0") or 0)
        for name, key_ in (("tests_run", "run"), ("failures", "failures"), ("errors", "errors"), ("skipped", "skipped"))
    }
    verdict = {**base, **counts, "passed": passed}
    if fields.get("load_error"):
        return Verdict(green=False, reason=f"the tests did not run: {fields['load_error']}", **verdict)
    if fields.get("tampered") != "0":
        return Verdict(green=False, reason="the test machinery was tampered with during the run", **verdict)
    if result.exit_code != 0:
        return Verdict(green=False, reason=f"the run exited with {result.exit_code}", **verdict)
    if counts["failures"] or counts["errors"] or counts["skipped"]:
        return Verdict(
            green=False,
            reason=f"{counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped",
            **verdict,
        )
    if passed != expected:
        missing = sorted(set(expected) - set(passed))
        return Verdict(
            green=False, reason=f"tests that did not pass: {', '.join(missing) or '(extra tests)'}", **verdict
        )
    return Verdict(green=True, reason=f"{len(passed)} tests passed", **verdict)


def _verified(line: str, key: bytes) -> str | None:
    _, _, rest = line.partition(MARKER)
    signature, sep, escaped = rest.partition(":")
    if not sep:
        return None
    try:
        body = bytes.fromhex(escaped.strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    return body if hmac.compare_digest(expected, signature) else None


async def run_verdict(
    capability: SandboxCapability, mad: MAD, call: Call | None, *, solution: dict[str, str], tests: str
) -> Verdict:
    """Run ``tests`` against the solution files in a fresh cell and judge the result."""
    await capability.ready()  # the guard waits for a sandbox still starting rather than failing the step
    key = secrets.token_bytes(32)
    files: dict[str, str | bytes] = {**solution, f"{TEST_MODULE}.py": tests, "verdict.key": key}
    result = await capability.run(mad, call, "verdict", code=DRIVER, input_files=files)
    return judge(result, key, expected_tests(tests))
