"""Choosing the bus of a process: memory by default, Redis with settings in the URL, bad values named."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bus.memory import InMemoryBus
from bus.redis import RedisBus
from mads import registry
from mads.core.settings import ConfigError, load_settings
from mads.host import Host, make_bus
from tests.deployment.support import REPO, child_env


def test_memory_is_the_default_and_runs_every_mad_in_one_process(tmp_path: Path) -> None:
    settings = load_settings(
        None, environ={}, known_mads=set(registry.MADS), overrides={"ecosystem": {"data_dir": str(tmp_path)}}
    )
    host = Host(settings)
    assert isinstance(host.bus, InMemoryBus)
    assert host.names == registry.available() and host.serves_gateway


def test_bus_settings_come_from_the_url_query_and_the_rest_goes_to_redis() -> None:
    bus = make_bus("redis://127.0.0.1:6379/14?prefix=team-a&reclaim_idle=5&socket_timeout=3", process="p")
    assert isinstance(bus, RedisBus)
    assert bus.settings.prefix == "team-a" and bus.settings.reclaim_idle == 5.0
    kwargs = bus.redis.connection_pool.connection_kwargs
    assert kwargs["db"] == 14 and kwargs["socket_timeout"] == 3.0 and "prefix" not in kwargs


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("prefix=has%20space", "ecosystem.bus: prefix: String should match pattern"),
        ("reclaim_idle=-1", "ecosystem.bus: reclaim_idle: Input should be greater than 0"),
        ("max_len=lots", "ecosystem.bus: max_len: Input should be a valid integer"),
    ],
)
def test_a_bad_bus_setting_is_a_configuration_error_naming_it(query: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_bus(f"redis://127.0.0.1:6379/14?{query}", process="p")
    assert named in str(caught.value)


def test_the_banner_names_the_mads_and_hides_the_redis_password(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        environ={},
        known_mads=set(registry.MADS),
        overrides={
            "ecosystem": {
                "data_dir": str(tmp_path),
                "bus": "redis://:s3cret@127.0.0.1:6379/14?prefix=x",
                "mads": ["rogers"],
            }
        },
    )
    line = Host(settings).describe()
    assert "runs MADs: rogers;" in line and "no gateway in this process" in line
    assert "s3cret" not in line and "redis://:***@127.0.0.1:6379/14?prefix=x" in line


async def test_the_command_line_refuses_a_bad_prefix_with_exit_code_2(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "ecosystem.py"),
        "--bus",
        "redis://127.0.0.1:6379/14?prefix=no/slashes",
        "--mads",
        "rogers",
        "--data-dir",
        str(tmp_path),
        cwd=tmp_path,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 2, (out, err)
    assert b"configuration error: ecosystem.bus: prefix:" in err
