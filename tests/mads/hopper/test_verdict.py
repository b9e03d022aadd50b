"""The test verdict cannot be forged by the code under test: each attack is a solution that must not pass."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from mads.hopper.verdict import DRIVER, Verdict, expected_tests, judge
from sandbox import Sandbox
from tests.support.wasm_cache import CompiledCache

TESTS = """
import unittest
from solution import add

class AddTests(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(2, 3), 5)

    def test_negative(self):
        self.assertEqual(add(-2, -3), -5)

    def test_type_error(self):
        with self.assertRaises(TypeError):
            add("a", 1)
"""

HONEST = "def add(a, b):\n    return a + b\n"


@pytest.fixture
async def sandbox(compiled_cache: CompiledCache) -> AsyncIterator[Sandbox]:
    box = Sandbox(compiled_cache.path, pool_size=0)
    await box.start()
    try:
        yield box
    finally:
        await box.close()


async def verdict_of(sandbox: Sandbox, solution: str, tests: str = TESTS) -> Verdict:
    key = secrets.token_bytes(32)
    result = await sandbox.run_python(
        DRIVER,
        {"timeout_s": 20},
        {"solution.py": solution, "test_solution.py": tests, "verdict.key": key},
    )
    return judge(result, key, expected_tests(tests))


def test_the_host_finds_the_expected_tests_by_parsing_not_running() -> None:
    assert expected_tests(TESTS) == [
        "test_solution.AddTests.test_negative",
        "test_solution.AddTests.test_small",
        "test_solution.AddTests.test_type_error",
    ]
    assert expected_tests("def broken(:") == []


async def test_an_honest_solution_is_green_and_a_wrong_one_red(sandbox: Sandbox) -> None:
    green = await verdict_of(sandbox, HONEST)
    assert green.green, green
    assert green.passed == expected_tests(TESTS) and green.tests_run == 3
    red = await verdict_of(sandbox, "def add(a, b):\n    return a - b\n")
    assert not red.green and red.failures == 2 and "2 failed" in red.reason
    assert "AssertionError" in red.report


FORGERIES = {
    "prints a fake summary and exits": (
        "import os\nprint('\\n@@hopper-verdict@@' + 'ab' * 32 + ':' + b'1\\x1frun=3'.hex())\nos._exit(0)\n"
    ),
    "exits early with success": "import sys\nsys.exit(0)\n",
    "exits the process from inside a test": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "patches unittest's assertions": (
        "import unittest\nunittest.TestCase.assertEqual = lambda self, a, b, msg=None: None\n"
        "unittest.TestCase.assertRaises = lambda self, *a, **k: __import__('contextlib').nullcontext()\n"
        "def add(a, b):\n    return 0\n"
    ),
    "hands the verdict a report of its own": (
        "import sys\nsys.audit('hopper.verdict', 'run=3\\x1ffailures=0\\x1ferrors=0\\x1fskipped=0\\x1ftampered=0"
        "\\x1fpassed=test_solution.AddTests.test_negative,test_solution.AddTests.test_small,"
        "test_solution.AddTests.test_type_error\\x1fload_error=')\ndef add(a, b):\n    return 0\n"
    ),
    "reads the verdict key": "KEY = open('/input/verdict.key', 'rb').read()\ndef add(a, b):\n    return a + b\n",
    "searches the heap for the key": (
        "import gc\nFOUND = [o for o in gc.get_objects() if type(o).__name__ == 'function']\n"
        "def add(a, b):\n    return a + b\n"
    ),
    "walks up to the driver's frame": (
        "import sys\ndef add(a, b):\n    frame = sys._getframe(1)\n    frame.f_locals['self'].skipTest('no')\n"
    ),
    "walks a traceback to the driver's frame": (
        "def add(a, b):\n    try:\n        raise ValueError\n    except ValueError as e:\n"
        "        e.__traceback__.tb_frame.f_back.f_locals\n    return a + b\n"
    ),
    "skips every test": "import unittest\ndef add(a, b):\n    raise unittest.SkipTest('later')\n",
    "rewrites the test classes as they are built": (
        "import builtins\n_build = builtins.__build_class__\n"
        "def build(func, name, *bases, **kw):\n    cls = _build(func, name, *bases, **kw)\n"
        "    for attr in [a for a in vars(cls) if a.startswith('test')]:\n"
        "        setattr(cls, attr, lambda self: None)\n    return cls\n"
        "builtins.__build_class__ = build\ndef add(a, b):\n    return 0\n"
    ),
    "traces the driver to rewrite its results": (
        "import sys\nsys.settrace(lambda *a: None)\ndef add(a, b):\n    return 0\n"
    ),
}


WHY = {
    "prints a fake summary and exits": "does not verify: forged output",
    "exits early with success": "SystemExit",
    "exits the process from inside a test": "0 signed verdict lines",
    "patches unittest's assertions": "tampered with",
    "hands the verdict a report of its own": "failed",
    "reads the verdict key": "the verdict key is not readable",
    "searches the heap for the key": "gc.get_objects is not available",
    "walks up to the driver's frame": "3 errors",
    "walks a traceback to the driver's frame": "3 errors",
    "skips every test": "3 skipped",
    "rewrites the test classes as they are built": "tampered with",
    "traces the driver to rewrite its results": "sys.settrace is not available",
}


@pytest.mark.parametrize("attack", sorted(FORGERIES))
async def test_a_forged_verdict_is_red(sandbox: Sandbox, attack: str) -> None:
    verdict = await verdict_of(sandbox, FORGERIES[attack])
    assert not verdict.green, (attack, verdict)
    assert WHY[attack] in verdict.reason, verdict
