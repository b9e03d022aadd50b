"""Configuration: TOML + environment, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mads.core.settings import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ecosystem.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(None, environ={})
    assert settings.gateway.host == "127.0.0.1"
    assert settings.gateway.port == 8765
    assert settings.ecosystem.bus == "memory"


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nport = 9000\n[ecosystem]\ndata_dir = "x"\n[fiedler]\nretries = 1\n')
    settings = load_settings(
        path,
        environ={"MAD_GATEWAY__PORT": "9100", "MAD_FIEDLER__RETRIES": "3"},
        known_mads={"fiedler"},
        overrides={"ecosystem": {"data_dir": "y"}},
    )
    assert settings.gateway.port == 9100
    assert settings.section("fiedler") == {"retries": 3}
    assert settings.ecosystem.data_dir == Path("y")


def test_bad_value_names_key_and_env_var(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"MAD_GATEWAY__PORT": "high"})
    assert "gateway.port" in str(info.value)
    assert "MAD_GATEWAY__PORT" in str(info.value)


def test_unknown_key_and_section_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.prot: Extra inputs are not permitted"):
        load_settings(write(tmp_path, "[gateway]\nprot = 1\n"), environ={})
    with pytest.raises(ConfigError, match="unknown section"):
        load_settings(write(tmp_path, "[fiedlr]\nx = 1\n"), environ={}, known_mads={"fiedler"})


def test_invalid_toml_and_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[gateway\n"), environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_bus_url_validated() -> None:
    with pytest.raises(ConfigError, match=r"ecosystem\.bus"):
        load_settings(None, environ={"MAD_ECOSYSTEM__BUS": "kafka://x"})
