"""Regeneration through the gateway's JSON API: operators only (a refusal is audited), inputs checked.

Runs themselves (a change, confined tests, approval and reload) are proven end to end in
``tests/regeneration/test_approval.py``; here the door: who may use it and what it refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.gateway.conftest import GATEWAY_MADS, assert_error
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM

ROUTES = [
    ("get", "/api/regeneration/runs", None),
    ("post", "/api/regeneration/runs", {"mad": "mcnamara", "model": "scripted", "model_id": "openai/scripted"}),
    ("get", "/api/regeneration/runs/01ABC", None),
    ("post", "/api/regeneration/runs/01ABC/approve", {}),
    ("post", "/api/regeneration/runs/01ABC/reject", {"reason": "no"}),
]


async def _audit_tail(eco: Running, n: int = 50) -> list[dict[str, Any]]:
    cid = await eco.new_conversation()
    reply = (await eco.say(cid, f'/mcnamara tail {{"n": {n}}}'))["reply"]
    assert reply["error"] is None, reply
    return reply["data"][0]


async def test_a_person_who_is_not_an_operator_is_refused_and_the_refusal_audited(ecosystem: Running) -> None:
    async with ecosystem.signed_in_as("bob") as bob:
        for method, path, body in ROUTES:
            status, answer = await (bob.get(path) if method == "get" else bob.post(path, body))
            assert status == 403, (method, path, answer)
            assert_error(answer, "forbidden")
    denied = [r for r in await _audit_tail(ecosystem) if r["event_type"] == "regeneration.denied"]
    assert [(r["actor"], r["outcome"], r["action"]) for r in denied] == [
        ("bob", "denied", action) for action in ("list", "start", "show", "approve", "reject")
    ]
    assert {r["details"]["route"] for r in denied} == {path for _, path, _ in ROUTES}


async def test_an_operator_sees_the_runs_and_bad_input_is_named(ecosystem: Running) -> None:
    status, body = await ecosystem.get("/api/regeneration/runs")
    assert (status, body) == (200, {"runs": []})
    status, body = await ecosystem.get("/api/regeneration/runs/01NOSUCHRUN")
    assert status == 404
    assert_error(body, "not_found")
    status, body = await ecosystem.post("/api/regeneration/runs/01NOSUCHRUN/approve", {})
    assert status == 404

    start = {"mad": "mcnamara", "model": "scripted", "model_id": "openai/scripted"}
    status, body = await ecosystem.post("/api/regeneration/runs", {**start, "tests": ["../etc/passwd", "-p x"]})
    assert status == 422
    assert_error(body, "invalid_request", "body.tests")
    status, body = await ecosystem.post("/api/regeneration/runs", {**start, "max_calls": 0, "colour": "red"})
    assert status == 422
    assert_error(body, "invalid_request", "body.max_calls", "body.colour")
    status, body = await ecosystem.post("/api/regeneration/runs", {**start, "mad": "nosuchmad"})
    assert status == 422 and "unknown MAD 'nosuchmad'" in body["error"]["message"], body
    assert_error(body, "invalid_request", "body.mad")
    # An alias that can drift is refused before anything is made.
    status, body = await ecosystem.post("/api/regeneration/runs", {**start, "model_id": "openai/gpt-4o"})
    assert status == 422
    assert_error(body, "model_not_pinned", "body.model_id")
    status, body = await ecosystem.get("/api/regeneration/runs")
    assert (status, body) == (200, {"runs": []})


async def test_the_page_sends_a_signed_out_browser_to_sign_in(ecosystem: Running) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(
            ecosystem.at("/regeneration"), headers={"Accept": "text/html"}, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303
        assert response.headers["Location"] == "/login"
    status, page = await ecosystem.get("/regeneration")
    assert status == 200 and '<script src="/static/regeneration.js" type="module">' in page
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP forbids it


async def test_a_process_not_running_from_a_git_checkout_says_it_cannot_regenerate(
    tmp_path: Path, llm_server: ScriptedLLM
) -> None:
    settings = ecosystem_settings(tmp_path / "data", llm_server.base_url, mads=GATEWAY_MADS)
    (tmp_path / "installed").mkdir()
    async with running(settings, source=tmp_path / "installed") as eco:
        start = {"mad": "mcnamara", "model": "scripted", "model_id": "openai/scripted"}
        status, body = await eco.post("/api/regeneration/runs", start)
        assert status == 503
        error = assert_error(body, "regeneration_unavailable")
        assert "not a git checkout" in error["message"]
        status, body = await eco.get("/api/regeneration/runs")
        assert status == 503 and body["error"]["code"] == "regeneration_unavailable", body
