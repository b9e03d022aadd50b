"""Decoding JSON from the network: strict, bounded, and never an exception other than :class:`JsonInputError`.

Bodies and socket frames both come through here. Python's ``json`` accepts things a
client should not be able to send a server: nesting deep enough to exhaust the
interpreter's stack (``RecursionError``), integers of thousands of digits (a
``ValueError`` and a quadratic conversion), duplicate keys (the last silently wins,
so two readers may see two different messages), and ``NaN``/``Infinity`` (not JSON).
Each is refused with a reason a person can act on.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (no request of this API needs more than a few)."""
MAX_INT_DIGITS = 64
"""Integers with more digits than this are refused (every integer this API takes is far smaller)."""
MAX_KEY_SHOWN = 64


class JsonInputError(ValueError):
    """The input is not acceptable JSON; ``reason`` says why (and where, when the parser knows)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonInputError(f"invalid JSON: a number has {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _constant(name: str) -> Any:
    raise JsonInputError(f"invalid JSON: {name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = json.dumps(key[:MAX_KEY_SHOWN])
                raise JsonInputError(f"invalid JSON: duplicate key {shown} in an object")
            seen.add(key)
    return value


def _depth(value: Any) -> int:
    """The nesting depth of a decoded value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def too_deep() -> JsonInputError:
    return JsonInputError(f"invalid JSON: arrays/objects nested more than {MAX_DEPTH} levels deep")


def decode_json(raw: str | bytes) -> Any:
    """The decoded value, or :class:`JsonInputError` naming what is wrong with it."""
    try:
        value = json.loads(raw, parse_int=_int, parse_constant=_constant, object_pairs_hook=_object)
    except JsonInputError:
        raise
    except UnicodeDecodeError:
        raise JsonInputError("must be UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise too_deep() from None
    except ValueError as exc:  # anything else the decoder refuses (e.g. a number it cannot convert)
        raise JsonInputError(f"invalid JSON: {type(exc).__name__}") from None
    if _depth(value) > MAX_DEPTH:
        raise too_deep()
    return value
