"""Hostile guest programs: each must end in a clear, structured RunResult and leave the host untouched."""

import gzip
from pathlib import Path

import pytest

from sandbox import RunLimits, Sandbox

FAST = RunLimits(timeout_s=1.0, fuel=20_000_000_000, memory_bytes=64 * 1024 * 1024, output_bytes=4096)


async def test_infinite_loop_hits_timeout(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("print('before', flush=True)\nwhile True:\n    pass", limits=FAST)
    assert result.limit_hit == "timeout"
    assert result.trap == "interrupt"
    assert result.exit_code is None
    assert result.stdout == "before\n"  # -u: output before the trap survives


async def test_infinite_loop_hits_fuel(sandbox: Sandbox) -> None:
    limits = FAST.model_copy(update={"fuel": 500_000_000, "timeout_s": 10.0})
    result = await sandbox.run_python("while True:\n    pass", limits=limits)
    assert result.limit_hit == "fuel"
    assert result.trap == "out_of_fuel"
    assert result.fuel_used == 500_000_000


async def test_sleep_beyond_deadline_is_cut_at_deadline(sandbox: Sandbox) -> None:
    code = "import time\ntime.sleep(0.05)\nprint('short sleep ok')\ntime.sleep(3600)\nprint('never')"
    result = await sandbox.run_python(code, limits=FAST)
    assert result.stdout == "short sleep ok\n"
    assert result.limit_hit == "timeout"


async def test_memory_bomb_hits_memory_cap(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))", limits=FAST)
    assert result.limit_hit == "memory"
    assert "MemoryError" in result.stderr
    assert result.memory_bytes <= FAST.memory_bytes


async def test_single_huge_allocation_hits_memory_cap(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("x = bytearray(1 << 30)", limits=FAST)
    assert result.limit_hit == "memory"


async def test_output_flood_is_capped(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("while True:\n    print('x' * 100)", limits=FAST)
    assert result.limit_hit == "output"
    assert result.stdout_truncated
    assert len(result.stdout.encode()) == FAST.output_bytes
    assert "File too large" in result.stderr


async def test_huge_single_line_is_capped(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("import sys\nsys.stdout.write('y' * (8 << 20))", limits=FAST)
    assert result.limit_hit == "output"
    assert result.stdout == "y" * FAST.output_bytes


async def test_stderr_flood_is_capped(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("import sys\nwhile True:\n    sys.stderr.write('e' * 999)", limits=FAST)
    assert result.limit_hit == "output"
    assert result.stderr_truncated


async def test_default_deep_recursion_is_a_python_error(sandbox: Sandbox) -> None:
    result = await sandbox.run_python("def f(n):\n    return f(n + 1)\nf(0)", limits=FAST)
    assert result.exit_code == 1
    assert "RecursionError" in result.stderr


async def test_unbounded_recursion_limit_ends_in_a_limit_or_trap(sandbox: Sandbox) -> None:
    code = "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)"
    result = await sandbox.run_python(code, limits=FAST.model_copy(update={"fuel": 3_000_000_000}))
    assert not result.ok
    assert result.limit_hit is not None or result.trap == "stack_overflow" or "RecursionError" in result.stderr


@pytest.mark.parametrize("path", ["/etc/passwd", "../etc/passwd", "/scratch/../../etc/passwd", "/proc/self/environ"])
async def test_reading_outside_scratch_is_denied(sandbox: Sandbox, path: str) -> None:
    result = await sandbox.run_python(f"print(open({path!r}).read())", limits=FAST)
    assert result.exit_code == 1
    assert "root:" not in result.stdout
    assert "Error" in result.stderr


async def test_symlink_out_of_scratch_is_not_followed(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-CANARY")
    code = (
        "import os\n"
        f"os.symlink({str(secret)!r}, 'abs-link')\n"
        "os.symlink('../../../../../../" + str(secret).lstrip("/") + "', 'rel-link')\n"
        "for name in ('abs-link', 'rel-link'):\n"
        "    try:\n"
        "        print(name, open(name).read())\n"
        "    except OSError as exc:\n"
        "        print(name, 'denied', type(exc).__name__)\n"
    )
    limits = FAST.model_copy(update={"collect_bytes": 65536})
    result = await sandbox.run_python(code, limits=limits, collect_files=True)
    assert "HOST-SECRET-CANARY" not in result.stdout
    assert "abs-link denied" in result.stdout or "abs-link" not in result.stdout
    assert all("HOST-SECRET-CANARY" not in f.content for f in result.files)
    assert [f.path for f in result.files] == []  # symlinks are never read back by the host


@pytest.mark.parametrize(
    "path", ["/tmp/escape.txt", "../escape.txt", "/input/new.txt", "/scratch/../../x.txt", "/code/main.py"]
)
async def test_writing_outside_scratch_is_denied(sandbox: Sandbox, path: str) -> None:
    result = await sandbox.run_python(f"open({path!r}, 'w').write('x')", limits=FAST, input_files={"given.txt": "data"})
    assert result.exit_code == 1
    assert "Error" in result.stderr


async def test_guest_root_is_the_scratch_directory(sandbox: Sandbox) -> None:
    code = (
        "open('/escape.txt', 'w').write('a')\n"
        "open('rel.txt', 'w').write('b')\n"
        "import os\n"
        "print(sorted(os.listdir('/')))"
    )
    result = await sandbox.run_python(code, limits=FAST, collect_files=True)
    assert result.stdout == "['escape.txt', 'rel.txt']\n"
    assert {f.path: f.content for f in result.files} == {"escape.txt": "a", "rel.txt": "b"}


async def test_input_files_are_read_only(sandbox: Sandbox) -> None:
    code = "print(open('/input/given.txt').read())\nopen('/input/given.txt', 'a').write('more')"
    result = await sandbox.run_python(code, limits=FAST, input_files={"given.txt": "data"})
    assert result.stdout == "data\n"
    assert result.exit_code == 1
    assert "PermissionError" in result.stderr


@pytest.mark.parametrize(
    "call",
    [
        "socket.create_connection(('127.0.0.1', 6379), timeout=1)",
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', 6379))",
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 53))",
    ],
)
async def test_sockets_are_unavailable(sandbox: Sandbox, call: str) -> None:
    code = f"import socket\ntry:\n    {call}\n    print('connected')\nexcept Exception as exc:\n    print('refused')"
    result = await sandbox.run_python(code, limits=FAST)
    assert result.stdout == "refused\n"


@pytest.mark.parametrize(
    "code",
    [
        "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo pwned'])",
        "import os\nos.system('echo pwned')",
        "import os\nos.execv('/bin/sh', ['sh'])",
        "import threading\nthreading.Thread(target=print, args=('pwned',)).start()",
    ],
)
async def test_processes_and_threads_are_unavailable(sandbox: Sandbox, code: str) -> None:
    result = await sandbox.run_python(code, limits=FAST)
    assert result.exit_code == 1
    assert "pwned" not in result.stdout
    assert "Error" in result.stderr


async def test_host_environment_is_invisible(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAD_SANDBOX_CANARY", "canary-7f3a")
    result = await sandbox.run_python("import os\nprint(dict(os.environ))\nprint(os.getenv('MAD_SANDBOX_CANARY'))")
    assert result.stdout == "{}\nNone\n"


def gzip_bomb(mebibytes: int) -> bytes:
    """A multi-member gzip file: one 1 MiB member of zeros (~1 KB compressed) repeated."""
    member = gzip.compress(bytes(1 << 20), compresslevel=9)
    return member * mebibytes


async def test_gzip_bomb_input_hits_a_limit(sandbox: Sandbox) -> None:
    bomb = gzip_bomb(256)
    assert len(bomb) < 512 * 1024
    result = await sandbox.run_python(
        "import gzip\ndata = gzip.decompress(open('/input/bomb.gz', 'rb').read())\nprint(len(data))",
        limits=FAST,
        input_files={"bomb.gz": bomb},
    )
    assert result.limit_hit in {"memory", "fuel", "timeout"}
    assert result.stdout == ""


async def test_streaming_gzip_bomb_hits_time_or_fuel(sandbox: Sandbox) -> None:
    bomb = gzip_bomb(4096)
    code = "import gzip\nwith gzip.open('/input/bomb.gz') as f:\n    while f.read(1 << 16):\n        pass\nprint('end')"
    limits = FAST.model_copy(update={"timeout_s": 0.5})
    result = await sandbox.run_python(code, limits=limits, input_files={"bomb.gz": bomb})
    assert result.limit_hit in {"fuel", "timeout"}
    assert result.stdout == ""
