"""The command line: options before or after ``run``/``config``, unknown options named, ``config`` validating like
start, descriptions in ``--help``, and the console script / ``python -m`` entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mad_ecosystem.cli import build_parser, main, settings_from_args
from mads.core.settings import ConfigError
from mads.host import Host

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_local_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no ecosystem.toml lies around, and without the caller's MAD_* settings."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("MAD_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "argv", [["run", "--port", "9000"], ["--port", "9000"], ["--port", "9000", "run"], ["run", "--port=9000"]]
)
def test_run_options_work_before_and_after_the_command(argv: list[str]) -> None:
    settings = settings_from_args(build_parser().parse_args([*argv, "--host", "127.0.0.2"]))
    assert settings.gateway.port == 9000 and settings.gateway.host == "127.0.0.2"


def test_config_takes_the_data_dir_and_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--data-dir", str(tmp_path / "elsewhere"), "--port", "9100"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ecosystem"]["data_dir"] == str(tmp_path / "elsewhere")
    assert printed["gateway"]["port"] == 9100


def test_an_unknown_option_is_named_not_taken_for_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--prot", "9000"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--prot" in err and "did you mean --port?" in err and "invalid choice" not in err
    with pytest.raises(SystemExit):
        main(["run", "--prot", "9000"])
    assert "--prot" in capsys.readouterr().err


def test_config_refuses_what_start_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ecosystem.toml"
    config.write_text('[ecosystem]\nmads = ["rogers", "fiedler"]\n[fiedler]\nretries = "many"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"fiedler\.retries"):
        Host(settings_from_args(build_parser().parse_args(["--config", str(config), "--data-dir", str(tmp_path)])))
    assert main(["config", "--config", str(config), "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "fiedler.retries" in captured.err and captured.out == ""


@pytest.mark.parametrize("command", ["run", "config"])
def test_help_describes_the_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert not description.startswith(("options:", "positional")), out
    assert len(description.split()) > 8, out


def entry_points_help(*command: str) -> str:
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_console_script_python_m_and_ecosystem_py_share_one_command_line() -> None:
    script = Path(sys.executable).parent / "mad-ecosystem"
    assert script.exists(), "the installed project has the mad-ecosystem console script"
    outputs = [
        entry_points_help(str(script)),
        entry_points_help(sys.executable, "-m", "mad_ecosystem"),
        entry_points_help(sys.executable, str(ROOT / "ecosystem.py")),
    ]
    for out in outputs:
        assert "tokens" in out and "config" in out and "run" in out


@pytest.mark.slow
def test_the_wheel_declares_the_console_script(tmp_path: Path) -> None:
    uv = os.environ.get("UV") or "uv"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("mad_ecosystem-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "mad-ecosystem = mad_ecosystem.cli:main" in text
    assert "mad_ecosystem/__main__.py" in names and "mad_ecosystem/cli.py" in names
