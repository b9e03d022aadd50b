"""Print a MAD class's tool descriptors as JSON — run only inside the confined process.

``python -m regeneration.describe mads.marco:Marco`` imports the class named (code an LLM may
have written: never imported in the ecosystem's own process before approval) and prints
``{"tools": [descriptor, …]}`` on stdout, sorted by name. A failure prints a one-line reason on
stderr and exits 2.
"""

from __future__ import annotations

import importlib
import json
import sys

from mads.core.tools import declared_tools


def describe(target: str) -> dict[str, object]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"target: expected 'package.module:Class', got {target!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    if not isinstance(cls, type):
        raise TypeError(f"target: {target} is not a class")
    tools = declared_tools(cls)
    return {"tools": [tools[name].descriptor() for name in sorted(tools)]}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m regeneration.describe package.module:Class", file=sys.stderr)
        return 2
    try:
        described = describe(argv[0])
    except Exception as e:  # the reason goes back to the report, whatever the LLM's code raised
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(described, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
