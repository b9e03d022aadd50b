"""Find a Redis for the bus tests, or start a private one.

``MAD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``) is tried first; if
nothing answers and ``redis-server`` is installed, one is started on a free port
for the session (no persistence, in a temporary directory). Without either, tests
fail under ``CI=true`` and are skipped elsewhere, saying how to enable them. Every
test uses its own key prefix and deletes its keys afterwards: the database may be
shared, so it is never flushed.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis

DEFAULT_URL = "redis://127.0.0.1:6379/13"
ENABLE_HINT = (
    "no Redis for the bus tests: start one on 127.0.0.1:6379 (DB 13 is used), set MAD_TEST_REDIS_URL, "
    "or install redis-server so the tests can start their own"
)
READY_TIMEOUT = 10.0

_session_url: str | None = None


def ping(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on loopback, without persistence, that a test may stop and restart."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="mad-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not ping(self.url, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not become ready")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Kill the server outright (SIGKILL): with no persistence every key is lost, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_url() -> str:
    """The session's Redis URL; starts a private server if needed, else fails (CI) or skips."""
    global _session_url
    if _session_url is not None:
        return _session_url
    url = os.environ.get("MAD_TEST_REDIS_URL", DEFAULT_URL)
    if ping(url):
        _session_url = url
        return url
    if shutil.which("redis-server"):
        server = RedisServer().start()
        atexit.register(server.cleanup)
        _session_url = server.url
        return server.url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{ENABLE_HINT} (CI=true makes Redis tests mandatory)", pytrace=False)
    pytest.skip(ENABLE_HINT)


def unique_prefix(label: str = "t") -> str:
    """A key prefix no other test (or run) shares."""
    clean = re.sub(r"[^A-Za-z0-9_\-]", "_", label)[:40]
    return f"test-{secrets.token_hex(4)}-{clean}"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (and nothing else)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()
