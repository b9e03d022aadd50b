"""What a clone must carry besides code: the licence it declares and a flake whose inputs are pinned."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_declared_licence_is_shipped() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_every_flake_input_is_locked_by_revision_and_hash() -> None:
    inputs = set(re.findall(r"inputs\.(\w+)\.url", (ROOT / "flake.nix").read_text()))
    assert inputs, "flake.nix declares no inputs"
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7
    root = lock["nodes"][lock["root"]]
    assert set(root["inputs"]) == inputs
    for name in inputs:
        locked = lock["nodes"][root["inputs"][name]]["locked"]
        assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"]), (name, locked)
        assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"]), (name, locked)
