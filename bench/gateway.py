"""The gateway against a bare aiohttp app, measured in the same run by the same load generator.

Run: ``uv run python bench/gateway.py`` (``--connections`` in flight, default 50; ``--duration``
seconds per row, default 5; ``--reps`` runs per row, the median is printed; ``--rows get,health,post``
picks rows).

The real ecosystem (Rogers, Fiedler, Grace, gateway; in-memory bus; no LLM needed) and a bare
aiohttp app — one JSON GET handler and one JSON POST handler, nothing else — are started in this
process; the load comes from a child process (``wrk`` if it is on the PATH, else
``bench/loadgen.py``), so neither server shares its core with the client. Rows:

* **authenticated GET /api/mads** (bearer token; every middleware: blocklist, rate limits,
  authentication, redaction, security headers) against a bare GET handler sending the same body;
* **GET /healthz** (no authentication) against a bare GET handler of the same body;
* **a command message** — ``POST /api/conversations/{id}/messages`` with ``/fiedler models``:
  ownership check, Grace, the command, the reply, and Rogers storing the exchange durably
  (``sync`` answers once it is committed) — against the bare POST handler.

The gateway's rate limits are raised for the run (one client IP sends everything). Each row
prints requests per second, p50 and p99 latency of both sides and the ratio gateway/bare, the
median of ``--reps`` runs interleaved so both sides see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.support.ecosystem import ecosystem_settings, running

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


async def bare_app(listing: dict, health: dict) -> tuple[web.AppRunner, str]:
    """The peer: aiohttp with one JSON GET and one JSON POST handler, no middleware.

    The GET handlers serialise ``listing`` and ``health`` — the gateway's own ``/api/mads`` and
    ``/healthz`` bodies, fetched once — on every request, so both sides send the same bytes.
    """

    async def get(request: web.Request) -> web.Response:
        return web.json_response(listing)

    async def small(request: web.Request) -> web.Response:
        return web.json_response(health)

    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"reply": {"text": str(body.get("text", ""))}})

    app = web.Application()
    app.router.add_get("/get", get)
    app.router.add_get("/health", small)
    app.router.add_post("/post", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def load(url: str, connections: int, duration: float, *, method: str = "GET", headers=None, body=None) -> dict:
    """One run of the load generator in a child process."""
    args = [sys.executable, str(LOADGEN), url, "--method", method, "--connections", str(connections)]
    args += ["--duration", str(duration)]
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}: {value}"]
    if body is not None:
        args += ["--body", json.dumps(body)]
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


def row(label: str, ours: list[dict], bare: list[dict]) -> None:
    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    ratio = statistics.median(o["rps"] / b["rps"] for o, b in zip(ours, bare, strict=True))
    errors = sum(r["errors"] for r in ours)
    print(
        f"{label:<34}{med(ours, 'rps'):>9,.0f}{med(ours, 'p50_ms'):>8.1f}{med(ours, 'p99_ms'):>8.1f}"
        f"{med(bare, 'rps'):>9,.0f}{med(bare, 'p50_ms'):>8.1f}{med(bare, 'p99_ms'):>8.1f}{ratio:>7.2f}{errors:>8}"
    )


ROWS = {"get": "authenticated GET /api/mads", "health": "GET /healthz", "post": "POST command message (durable)"}


async def main(connections: int, duration: float, reps: int, only: list[str]) -> None:
    if shutil.which("wrk"):
        print("(wrk found, but the Python load generator is used for both sides for identical request shapes)")
    limits = {"rate_per_ip": 1e9, "burst_per_ip": 10**9, "rate_per_principal": 1e9, "burst_per_principal": 10**9}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        settings = ecosystem_settings(Path(tmp), None, gateway=limits, ecosystem={"freeze_startup_heap": True})
        async with running(settings) as eco:
            status, listing = await eco.get("/api/mads")
            assert status == 200, listing
            runner, bare = await bare_app(listing, (await eco.get("/healthz"))[1])
            try:
                cid = await eco.new_conversation()
                await eco.say(cid, "/fiedler models")
                auth = eco.auth_headers
                rows = {
                    "authenticated GET /api/mads": (
                        {"url": eco.at("/api/mads"), "headers": auth},
                        {"url": f"{bare}/get"},
                    ),
                    "GET /healthz": ({"url": eco.at("/healthz")}, {"url": f"{bare}/health"}),
                    "POST command message (durable)": (
                        {
                            "url": eco.at(f"/api/conversations/{cid}/messages"),
                            "method": "POST",
                            "headers": auth,
                            "body": {"text": "/fiedler models"},
                        },
                        {"url": f"{bare}/post", "method": "POST", "body": {"text": "/fiedler models"}},
                    ),
                }
                print(f"{connections} connections, {duration:g} s per run, median of {reps} runs")
                print(f"{'':<34}{'gateway':>25}{'bare aiohttp':>25}")
                print(f"{'row':<34}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}")
                for label, (ours_spec, bare_spec) in rows.items():
                    if label not in {ROWS[name] for name in only}:
                        continue
                    ours: list[dict] = []
                    theirs: list[dict] = []
                    for rep in range(reps):
                        pair = [(ours, ours_spec), (theirs, bare_spec)]
                        for results, spec in pair if rep % 2 == 0 else reversed(pair):
                            spec = dict(spec)
                            results.append(await load(spec.pop("url"), connections, duration, **spec))
                    row(label, ours, theirs)
                print(f"{'':<34}{'':>49}{'ratio':>7}{'errors':>8}")
            finally:
                await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    args = parser.parse_args()
    only = args.rows.split(",")
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        parser.error(f"--rows: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    asyncio.run(main(args.connections, args.duration, args.reps, only))
