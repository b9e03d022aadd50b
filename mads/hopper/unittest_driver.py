"""Guest program for Hopper's run_tests: runs inside the sandbox, never on the host.

The solution and its tests are read-only input files (/input/solution.py, /input/test_solution.py).
Unittest's report goes to stderr; the last stdout line is a JSON summary after a marker. Code under
test runs in the same cell and could forge that line, so the summary is as trustworthy as the code.
"""

import json
import sys
import traceback
import unittest

MARKER = "@@hopper-run-tests@@"

sys.dont_write_bytecode = True
sys.path.insert(0, "/input")
try:
    suite = unittest.defaultTestLoader.loadTestsFromName("test_solution")
except Exception:  # the solution or the tests do not import: one error, with the traceback
    traceback.print_exc()
    summary = {"tests_run": 0, "failures": 0, "errors": 1, "skipped": 0, "failed_tests": ["test_solution"]}
    sys.stdout.write("\n" + MARKER + json.dumps(summary) + "\n")
    sys.exit(1)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
summary = {
    "tests_run": result.testsRun,
    "failures": len(result.failures),
    "errors": len(result.errors),
    "skipped": len(result.skipped),
    "failed_tests": [test.id() for test, _ in (result.failures + result.errors)][:100],
}
sys.stdout.write("\n" + MARKER + json.dumps(summary) + "\n")
sys.exit(0 if result.wasSuccessful() else 1)
