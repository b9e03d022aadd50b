"""What the OpenAI and MCP doors cost over the gateway's own JSON API, measured in the same run.

Run: ``uv run python bench/doors.py`` (``--n`` requests per column and run, ``--reps`` runs).

One in-process ecosystem (Rogers, Fiedler, Grace, gateway on loopback), Fiedler pointed at the
scripted LLM server answering every call with the same short reply. Sequential requests, one
client each, columns interleaved run by run:

* **chat, JSON API**: ``POST /api/conversations/{id}/messages`` — one turn, one LLM call, stored.
* **chat, OpenAI door**: ``POST /v1/chat/completions`` with the official ``openai`` client and
  ``X-Conversation-Id`` — the same turn, plus the usage lookup and the OpenAI body.
* **tool, JSON API**: ``GET /api/conversations?limit=1`` — Rogers's ``list_conversations`` by command.
* **tool, MCP door**: ``tools/call rogers_list_conversations {"limit": 1}`` with the official ``mcp``
  client — the same command through the MCP server.
* **tool, MCP door, raw**: the same ``tools/call`` as one JSON-RPC POST from aiohttp (the JSON API's
  client), so the MCP client's own cost is left out.

Figures are requests per second (wall clock), median of ``--reps`` runs; ratios are door / JSON API.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support.ecosystem import ecosystem_settings, running
from tests.support.llm_server import Reply, ScriptedLLM


async def rate(n: int, one: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await one()
    return n / (time.perf_counter() - start)


async def main(n: int, reps: int) -> None:
    async with ScriptedLLM(responder=lambda _request: Reply(text="ok")) as llm:
        with tempfile.TemporaryDirectory(prefix="bench-doors-") as data_dir:
            settings = ecosystem_settings(
                Path(data_dir),
                llm.base_url,
                gateway={
                    "rate_per_principal": 100_000,
                    "burst_per_principal": 100_000,
                    "rate_per_ip": 100_000,
                    "burst_per_ip": 100_000,
                },
            )
            async with running(settings) as eco:
                native_cid = await eco.new_conversation("bench")
                oai = openai.AsyncOpenAI(base_url=eco.at("/v1"), api_key=eco.token, max_retries=0)
                first = await oai.chat.completions.with_raw_response.create(
                    model="grace", messages=[{"role": "user", "content": "hello"}]
                )
                door_cid = first.headers["X-Conversation-Id"]
                headers = {"Authorization": f"Bearer {eco.token}"}
                async with (
                    create_mcp_http_client(headers=headers) as http,
                    streamable_http_client(eco.at("/mcp"), http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()

                    async def chat_native() -> object:
                        return await eco.say(native_cid, "hello")

                    async def chat_door() -> object:
                        return await oai.chat.completions.create(
                            model="grace",
                            messages=[{"role": "user", "content": "hello"}],
                            extra_headers={"X-Conversation-Id": door_cid},
                        )

                    async def tool_native() -> object:
                        status, body = await eco.get("/api/conversations", params={"limit": "1"})
                        assert status == 200, body
                        return body

                    rpc = {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "tools/call",
                        "params": {"name": "rogers_list_conversations", "arguments": {"limit": 1}},
                    }
                    rpc_headers = {
                        "Accept": "application/json, text/event-stream",
                        "MCP-Protocol-Version": "2025-11-25",
                    }

                    async def tool_door_raw() -> object:
                        status, body = await eco.post("/mcp", rpc, headers=rpc_headers)
                        assert status == 200 and not body["result"]["isError"], body
                        return body

                    async def tool_door() -> object:
                        result = await session.call_tool("rogers_list_conversations", {"limit": 1})
                        assert not result.is_error, result
                        return result

                    columns: dict[str, list[float]] = {
                        "chat_native": [],
                        "chat_door": [],
                        "tool_native": [],
                        "tool_door": [],
                        "tool_door_raw": [],
                    }
                    calls = {
                        "chat_native": chat_native,
                        "chat_door": chat_door,
                        "tool_native": tool_native,
                        "tool_door": tool_door,
                        "tool_door_raw": tool_door_raw,
                    }
                    for call in calls.values():
                        await rate(3, call)  # warm up
                    for _ in range(reps):
                        for name, call in calls.items():
                            columns[name].append(await rate(n, call))
                await oai.close()
    med = {name: statistics.median(values) for name, values in columns.items()}
    chat_ratio = statistics.median(d / j for d, j in zip(columns["chat_door"], columns["chat_native"], strict=True))
    tool_ratio = statistics.median(d / j for d, j in zip(columns["tool_door"], columns["tool_native"], strict=True))
    raw_ratio = statistics.median(d / j for d, j in zip(columns["tool_door_raw"], columns["tool_native"], strict=True))
    print(f"{n} sequential requests per column, median of {reps} runs (wall clock, requests/s):")
    print(
        f"  chat  JSON API  {med['chat_native']:8.1f}   OpenAI door {med['chat_door']:8.1f}   door/API {chat_ratio:.3f}"
    )
    print(
        f"  tool  JSON API  {med['tool_native']:8.1f}   MCP door    {med['tool_door']:8.1f}   door/API {tool_ratio:.3f}"
    )
    print(
        f"  tool  JSON API  {med['tool_native']:8.1f}   MCP door, raw JSON-RPC {med['tool_door_raw']:8.1f}   "
        f"door/API {raw_ratio:.3f}  (no MCP client: the server side alone)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.reps))
