"""The JSON API against the real ecosystem: good input, and bad input named field by field."""

from __future__ import annotations

from tests.gateway.conftest import assert_error
from tests.support.ecosystem import Running
from tests.support.llm_server import Reply, ScriptedLLM, ServerError


async def test_healthz_reports_liveness_and_bus_stats(ecosystem: Running) -> None:
    status, body = await ecosystem.get("/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["mads_alive"] == ["fiedler", "grace", "mcnamara", "rogers"]
    assert body["bus"]["published"] > 0
    assert set(body["bus"]) >= {"published", "delivered", "rejected", "handler_errors", "queued"}


async def test_mads_lists_directory_with_mcp_tool_descriptors(ecosystem: Running) -> None:
    status, body = await ecosystem.get("/api/mads")
    assert status == 200
    mads = {m["name"]: m for m in body["mads"]}
    assert set(mads) == {"fiedler", "grace", "mcnamara", "rogers"}
    assert all(m["alive"] for m in mads.values())
    grace_tools = {t["name"]: t for t in mads["grace"]["tools"]}
    assert {"handoff", "list_mads"} <= set(grace_tools)
    handoff = grace_tools["handoff"]
    assert set(handoff) == {"name", "description", "inputSchema"}
    assert handoff["inputSchema"]["required"] == ["mad", "request"]
    assert "history" in {t["name"] for t in mads["rogers"]["tools"]}


async def test_create_list_and_get_conversations(ecosystem: Running) -> None:
    status, created = await ecosystem.post("/api/conversations", {"title": "Budget"})
    assert status == 201
    assert created["title"] == "Budget" and created["created_by"] == "user.tester"
    untitled = await ecosystem.new_conversation()
    status, fetched = await ecosystem.get(f"/api/conversations/{created['id']}")
    assert status == 200 and fetched["id"] == created["id"]

    status, page = await ecosystem.get("/api/conversations", params={"limit": "1"})
    assert status == 200
    assert [c["id"] for c in page["conversations"]] == [untitled]
    assert page["next_cursor"]
    status, rest = await ecosystem.get("/api/conversations", params={"limit": "1", "cursor": page["next_cursor"]})
    assert status == 200
    assert [c["id"] for c in rest["conversations"]] == [created["id"]]


async def test_create_conversation_with_empty_body_is_untitled(ecosystem: Running) -> None:
    async with ecosystem.http.post(ecosystem.at("/api/conversations")) as response:
        assert response.status == 201
        assert (await response.json())["title"] is None


async def test_post_message_returns_reply_and_participants_and_is_durable(
    ecosystem: Running, llm_server: ScriptedLLM
) -> None:
    llm_server.script(Reply(text="Hello, person."))
    cid = await ecosystem.new_conversation("greeting")
    body = await ecosystem.say(cid, "hello")
    assert body["reply"] == {"text": "Hello, person.", "data": [], "error": None, "artifacts": []}
    assert body["participants"] == ["grace", "fiedler"]
    assert body["conversation_id"] == cid
    assert llm_server.last_request.last_user_text == "hello"
    messages = await ecosystem.history(cid)
    mine = [m for m in messages if m["id"] == body["message_id"]]
    assert mine and mine[0]["sender"] == "user.tester" and mine[0]["text"] == "hello"
    replies = [m for m in messages if m["recipient"] == "user.tester" and m["kind"] == "reply"]
    assert replies[-1]["text"] == "Hello, person."
    assert replies[-1]["correlation_id"] == body["message_id"]


async def test_history_pages_with_cursor_and_direction(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    for n in range(3):
        await ecosystem.say(cid, f"/grace list_mads {{}}{' ' * n}")
    everything = await ecosystem.history(cid, limit=200)
    status, first = await ecosystem.get(f"/api/conversations/{cid}/messages", params={"limit": "2"})
    assert status == 200
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in everything[:2]]
    status, second = await ecosystem.get(
        f"/api/conversations/{cid}/messages", params={"limit": "2", "cursor": first["next_cursor"]}
    )
    assert [m["id"] for m in second["messages"]] == [m["id"] for m in everything[2:4]]
    status, newest = await ecosystem.get(
        f"/api/conversations/{cid}/messages", params={"limit": "1", "direction": "backward"}
    )
    assert newest["messages"][0]["id"] == everything[-1]["id"]


async def test_unknown_conversation_is_404(ecosystem: Running) -> None:
    for method, path in [
        ("get", "/api/conversations/nope/messages"),
        ("post", "/api/conversations/nope/messages"),
        ("get", "/api/conversations/nope"),
    ]:
        if method == "get":
            status, body = await ecosystem.get(path)
        else:
            status, body = await ecosystem.post(path, {"text": "hi"})
        assert status == 404, (path, body)
        error = assert_error(body, "not_found")
        assert "nope" in error["message"]


async def test_malformed_conversation_id_is_422_naming_the_path(ecosystem: Running) -> None:
    status, body = await ecosystem.get("/api/conversations/" + "x" * 65 + "/messages")
    assert status == 422
    assert_error(body, "invalid_request", "path.conversation_id")


async def test_malformed_json_is_400(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.post(
        f"/api/conversations/{cid}/messages", data=b'{"text": ', headers={"Content-Type": "application/json"}
    )
    assert status == 400
    error = assert_error(body, "malformed_json", "body")
    assert "line 1" in error["message"]


async def test_wrong_content_type_is_415(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.post(
        f"/api/conversations/{cid}/messages", data=b"text=hi", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    error = assert_error(body, "unsupported_media_type", "Content-Type")
    assert "text/plain" in error["message"]


async def test_body_over_the_limit_is_413(ecosystem: Running) -> None:
    limit = ecosystem.host.settings.gateway.max_body_bytes
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.post(f"/api/conversations/{cid}/messages", {"text": "a" * (limit + 10)})
    assert status == 413
    error = assert_error(body, "payload_too_large", "body")
    assert str(limit) in error["message"]


async def test_schema_violations_are_422_naming_each_field(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    path = f"/api/conversations/{cid}/messages"
    status, body = await ecosystem.post(path, {})
    assert status == 422
    assert_error(body, "invalid_request", "body.text")
    status, body = await ecosystem.post(path, {"text": "hi", "txet": "typo"})
    assert status == 422
    assert_error(body, "invalid_request", "body.txet")
    status, body = await ecosystem.post(path, {"text": "   "})
    assert status == 422
    error = assert_error(body, "invalid_request", "body.text")
    assert "whitespace" in error["fields"][0]["reason"]
    status, body = await ecosystem.post(path, ["hi"])
    assert status == 422
    assert_error(body, "invalid_request", "body")
    status, body = await ecosystem.post("/api/conversations", {"title": ""})
    assert status == 422
    assert_error(body, "invalid_request", "body.title")


async def test_query_violations_are_422_naming_each_parameter(ecosystem: Running) -> None:
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.get(f"/api/conversations/{cid}/messages", params={"limit": "0"})
    assert status == 422
    assert_error(body, "invalid_request", "query.limit")
    status, body = await ecosystem.get(f"/api/conversations/{cid}/messages", params={"direction": "sideways"})
    assert status == 422
    assert_error(body, "invalid_request", "query.direction")
    status, body = await ecosystem.get("/api/conversations", params={"limt": "5"})
    assert status == 422
    assert_error(body, "invalid_request", "query.limt")
    status, body = await ecosystem.get("/api/conversations", params=[("limit", "1"), ("limit", "2")])
    assert status == 422
    assert_error(body, "invalid_request", "query.limit")


async def test_unknown_route_and_wrong_method_are_json(ecosystem: Running) -> None:
    status, body = await ecosystem.get("/api/nothing-here")
    assert status == 404
    assert_error(body, "not_found")
    async with ecosystem.http.delete(ecosystem.at("/api/conversations")) as response:
        assert response.status == 405
        assert_error(await response.json(), "method_not_allowed")
        assert "GET" in response.headers["Allow"]


async def test_llm_failure_is_502_with_the_mads_error(ecosystem: Running, llm_server: ScriptedLLM) -> None:
    llm_server.script(ServerError(status=500, message="scripted outage"))
    cid = await ecosystem.new_conversation()
    status, body = await ecosystem.post(f"/api/conversations/{cid}/messages", {"text": "hi"})
    assert status == 502
    error = assert_error(body, "imperator_failed")
    assert error["message"].startswith("grace: ")


async def test_query_values_outside_the_documented_schema_are_named(ecosystem: Running) -> None:
    for since in ("0.5", "1700000000", "yesterday", "2026-01-31T12:00:00"):
        status, body = await ecosystem.get("/api/alerts", params={"since": since})
        assert status == 422, (since, body)
        assert_error(body, "invalid_request", "query.since")
    status, body = await ecosystem.get("/api/alerts", params={"since": "2026-01-31T12:00:00Z"})
    assert status == 200, body
    for cursor in ("0", "x", "not-a-cursor"):
        status, body = await ecosystem.get("/api/conversations", params={"cursor": cursor})
        assert status == 422, (cursor, body)
        assert_error(body, "invalid_request", "query.cursor")


async def test_the_openapi_document_says_what_the_queries_and_bodies_accept(ecosystem: Running) -> None:
    status, document = await ecosystem.get("/api/openapi.json")
    assert status == 200
    alerts = {p["name"]: p for p in document["paths"]["/api/alerts"]["get"]["parameters"]}
    assert alerts["since"]["schema"]["format"] == "date-time" and "offset" in alerts["since"]["description"]
    listing = {p["name"]: p for p in document["paths"]["/api/conversations"]["get"]["parameters"]}
    assert "next_cursor" in listing["cursor"]["description"]
    assert "422" in document["paths"]["/api/conversations"]["get"]["responses"]
    post = document["paths"]["/api/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert "413" in post and "422" in post
