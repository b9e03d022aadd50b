"""Rogers over a real bus and a real SQLite file: what it stores and what its tools return."""

from __future__ import annotations

import json

import aiosqlite
import pytest
from pydantic import ValidationError

from bus.envelope import CommandPart, DataPart, Envelope, Kind, ProsePart, parse_envelope
from bus.ids import new_id
from bus.memory import InMemoryBus
from bus.topics import TOOL_CALL, stream_topic
from mads.core.base import MadContext
from mads.rogers import Rogers
from mads.rogers.migrations import LATEST_VERSION
from mads.rogers.schemas import RogersConfig
from tests.mads.rogers.support import Echo, Recorder, call, note, request
from tests.support.waiting import eventually_async


async def stored_rows(rogers: Rogers) -> dict[str, tuple[str | None, str, str]]:
    """Every stored message read straight from the file: id -> (conversation_id, kind, envelope JSON)."""
    async with (
        aiosqlite.connect(rogers.store.path) as db,
        db.execute("SELECT id, conversation_id, kind, envelope FROM messages") as cursor,
    ):
        return {row[0]: (row[1], row[2], row[3]) for row in await cursor.fetchall()}


async def eventually_stored(rogers: Rogers, seq: int) -> Envelope:
    """The message stored with sequence number ``seq``, once it is stored (fails the test after a deadline)."""
    query = "SELECT envelope FROM messages WHERE seq = ?"
    found: list[str] = []

    async def stored() -> bool:
        async with aiosqlite.connect(rogers.store.path) as db, db.execute(query, (seq,)) as cursor:
            found.extend(row[0] for row in await cursor.fetchall())
        return bool(found)

    await eventually_async(stored, what=f"message {seq} stored")
    return parse_envelope(found[0])


async def test_every_envelope_crossing_the_bus_is_stored(bus: InMemoryBus, rogers: Rogers, echo: Echo) -> None:
    recorder = Recorder()
    await bus.wiretap(recorder)
    conversation = await call(bus, "create_conversation", {"title": "kinds"})
    cid = conversation["id"]

    answered = await request(bus, "echo", "echo", {"text": "hello"}, conversation_id=cid, sender="user.alice")
    refused = await request(bus, "echo", "fail", {"text": "no"}, conversation_id=cid)
    contract_error = await request(bus, "echo", "echo", {"txt": "typo"}, conversation_id=cid)
    unrouted = await request(bus, "nobody", "echo", {}, conversation_id=cid)
    await bus.publish(note(cid, "an event about the plan"))
    await bus.publish(note(None, "an event outside any conversation"))
    await bus.publish(
        Envelope(
            sender="echo",
            recipient=stream_topic(cid),
            kind=Kind.EVENT,
            conversation_id=cid,
            content=[DataPart(value={"text": "del"})],
        )
    )
    assert answered.kind is Kind.REPLY
    assert {e.kind for e in (refused, contract_error, unrouted)} == {Kind.ERROR}

    sync_request = Envelope(
        sender="user.tester", recipient="rogers", kind=Kind.REQUEST, content=[CommandPart(tool="sync")]
    )
    synced = await bus.request(sync_request)
    assert synced.error is None
    crossed = await recorder.through(sync_request.id)
    rows = await stored_rows(rogers)

    expected = [
        e
        for e in crossed
        if not e.recipient.startswith("stream.") and not (e.sender == "rogers" and e.kind is Kind.REPLY)
    ]
    assert {e.kind for e in expected} == set(Kind)
    for envelope in expected:
        assert envelope.id in rows, f"{envelope.kind} {envelope.sender}->{envelope.recipient} not stored"
        conversation_id, kind, raw = rows[envelope.id]
        assert (conversation_id, kind) == (envelope.conversation_id, envelope.kind.value)
        assert parse_envelope(raw) == envelope
    skipped = [e for e in crossed if e.recipient.startswith("stream.")]
    assert skipped and all(e.id not in rows for e in skipped)
    assert any(e.recipient == "events.tool_call" for e in expected)
    assert any(e.conversation_id is None and e.kind is Kind.EVENT for e in expected)


async def test_sync_reports_the_last_stored_id_and_count(bus: InMemoryBus, rogers: Rogers) -> None:
    first = await call(bus, "sync")
    events = [note(None, f"n{i}") for i in range(5)]
    for event in events:
        await bus.publish(event)
    second = await call(bus, "sync")
    # five events, the second sync request itself (and the first one's tool-call event)
    assert second["count"] >= first["count"] + 6
    rows = await stored_rows(rogers)
    assert second["stored_through"] in rows
    assert all(e.id in rows for e in events)
    stats = await call(bus, "stats")
    assert stats["messages"] >= second["count"]
    assert stats["schema_version"] == LATEST_VERSION
    assert stats["pending"] >= 0 and stats["batches"] >= 1


async def test_history_pages_return_every_message_once_in_order(bus: InMemoryBus, rogers: Rogers) -> None:
    cid = (await call(bus, "create_conversation", {}))["id"]
    published = [note(cid, f"message {i}") for i in range(37)]
    for envelope in published:
        await bus.publish(envelope)
    await call(bus, "sync")

    seen: list[str] = []
    page = await call(bus, "history", {"conversation_id": cid, "limit": 10})
    seen += [m["id"] for m in page["messages"]]
    late = [note(cid, f"late {i}") for i in range(4)]  # arrive while the reader is between pages
    for envelope in late:
        await bus.publish(envelope)
    await call(bus, "sync")
    while page["next_cursor"] is not None:
        page = await call(bus, "history", {"conversation_id": cid, "limit": 10, "cursor": page["next_cursor"]})
        seen += [m["id"] for m in page["messages"]]
    expected = sorted(e.id for e in published + late)
    assert seen == expected

    backward: list[str] = []
    cursor = None
    while True:
        args = {"conversation_id": cid, "limit": 7, "direction": "backward"}
        page = await call(bus, "history", args if cursor is None else {**args, "cursor": cursor})
        backward += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert backward == expected[::-1]

    first = (await call(bus, "history", {"conversation_id": cid, "limit": 1}))["messages"][0]
    assert first["text"] == "message 0"
    assert parse_envelope(first["envelope"]) == published[0]


async def test_limits_above_page_max_are_lowered(bus: InMemoryBus, tmp_path) -> None:
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path, config=RogersConfig(page_max=3)))
    await rogers.start()
    try:
        cid = new_id()
        for i in range(5):
            await bus.publish(note(cid, f"m{i}"))
        await call(bus, "sync")
        page = await call(bus, "history", {"conversation_id": cid, "limit": 100})
        assert len(page["messages"]) == 3 and page["next_cursor"] is not None
    finally:
        await rogers.stop()


async def test_search_finds_prose_with_snippets(bus: InMemoryBus, rogers: Rogers) -> None:
    a, b = new_id(), new_id()
    await bus.publish(note(a, "The deployment of the payment service failed at midnight"))
    await bus.publish(note(a, "Rolling back the payments database"))
    await bus.publish(note(b, "Deployment of the search service went fine"))
    await call(bus, "sync")

    found = await call(bus, "search", {"query": "deployment"})
    assert {h["conversation_id"] for h in found["hits"]} == {a, b}
    assert all("[Deployment]" in h["snippet"] or "[deployment]" in h["snippet"] for h in found["hits"])

    within = await call(bus, "search", {"query": "deployment", "conversation_id": a})
    assert [h["conversation_id"] for h in within["hits"]] == [a]

    phrase = await call(bus, "search", {"query": '"payment service"'})
    assert len(phrase["hits"]) == 1 and "payment" in phrase["hits"][0]["snippet"]

    prefix = await call(bus, "search", {"query": "roll*"})
    assert [h["conversation_id"] for h in prefix["hits"]] == [a]

    nothing = await call(bus, "search", {"query": "kubernetes"})
    assert nothing["hits"] == []


HOSTILE = [
    '"',
    '""',
    "*",
    "NEAR(",
    "NEAR(deployment",
    "(((",
    ")",
    "deployment)",
    "a OR",
    "OR",
    "AND NOT",
    "text:deployment",
    "^deployment",
    "-deployment",
    '"unbalanced phrase',
    "deployment NOT",
    "'; DROP TABLE messages; --",
    "{text}: x",
    "deploy**",
    "ünïcödé déploiement",
    "NEAR(a b, 2)",
]


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_search_queries_never_break(bus: InMemoryBus, rogers: Rogers, query: str) -> None:
    await bus.publish(note(new_id(), "deployment finished"))
    await call(bus, "sync")
    reply = await request(bus, "rogers", "search", {"query": query})
    if any(ch.isalnum() for ch in query):
        assert reply.error is None, reply.error
        assert isinstance(reply.data()[0]["hits"], list)
    else:
        assert reply.error is not None
        assert reply.error.code == "invalid_arguments"
        assert [f.field for f in reply.error.fields] == ["content.0.arguments.query"]
    stats = await call(bus, "stats")
    assert stats["messages"] > 0


async def test_participants_are_tracked(bus: InMemoryBus, rogers: Rogers, echo: Echo) -> None:
    cid = (await call(bus, "create_conversation", {"title": "who", "created_by": "user.alice"}))["id"]
    await request(bus, "echo", "echo", {"text": "hi"}, conversation_id=cid, sender="user.alice")
    await request(bus, "nobody", "echo", {}, conversation_id=cid, sender="user.bob")
    await bus.publish(note(cid, "fyi", sender="echo"))
    await call(bus, "sync")

    conversation = await call(bus, "get_conversation", {"conversation_id": cid})
    assert conversation["title"] == "who" and conversation["created_by"] == "user.alice"
    people = {p["address"]: p for p in conversation["participants"]}
    assert set(people) == {"user.alice", "user.bob", "echo", "nobody"}
    assert people["user.alice"]["message_count"] == 2  # its request and echo's reply
    assert all(p["first_seen"] <= p["last_seen"] for p in people.values())
    # request + reply + echo's tool-call event, request + no_route error, the note
    assert conversation["message_count"] == 6


async def test_conversations_seen_only_on_the_bus_are_created(bus: InMemoryBus, rogers: Rogers) -> None:
    cid = "gateway-minted-42"
    await bus.publish(note(cid, "first words", sender="user.carol", recipient="hopper"))
    await call(bus, "sync")
    conversation = await call(bus, "get_conversation", {"conversation_id": cid})
    assert conversation["created_by"] == "user.carol" and conversation["message_count"] == 1
    assert [p["address"] for p in conversation["participants"]] == ["hopper", "user.carol"]


async def test_duplicate_delivery_is_stored_once(bus: InMemoryBus, rogers: Rogers) -> None:
    cid = new_id()
    envelope = note(cid, "delivered twice", sender="user.alice", recipient="hopper")
    await bus.publish(envelope)
    await bus.publish(envelope)
    before = (await call(bus, "sync"))["count"]
    await bus.publish(envelope)
    after = (await call(bus, "sync"))["count"]
    assert after == before + 2  # the first sync's tool-call event and the second sync request, no duplicate
    # The second sync's own tool-call event is published once its count is taken, so it is stored
    # after the reply: wait for it rather than race it (reading the rows at once failed as 4 == 5).
    last = await eventually_stored(rogers, after + 1)
    assert len(await stored_rows(rogers)) == after + 1
    assert last.recipient == TOOL_CALL and last.data()[0]["tool"] == "sync"
    history = await call(bus, "history", {"conversation_id": cid})
    assert [m["id"] for m in history["messages"]] == [envelope.id]
    conversation = await call(bus, "get_conversation", {"conversation_id": cid})
    assert conversation["message_count"] == 1
    assert {p["address"]: p["message_count"] for p in conversation["participants"]} == {"user.alice": 1, "hopper": 1}


async def test_list_conversations_pages_newest_first(bus: InMemoryBus, rogers: Rogers) -> None:
    created = [(await call(bus, "create_conversation", {"title": f"c{i}"}))["id"] for i in range(7)]
    seen: list[str] = []
    page = await call(bus, "list_conversations", {"limit": 3})
    seen += [c["id"] for c in page["conversations"]]
    while page["next_cursor"]:
        page = await call(bus, "list_conversations", {"limit": 3, "cursor": page["next_cursor"]})
        seen += [c["id"] for c in page["conversations"]]
    assert seen == created[::-1]


async def test_created_by_defaults_to_the_caller(bus: InMemoryBus, rogers: Rogers) -> None:
    conversation = await call(bus, "create_conversation", {}, sender="user.dave")
    assert conversation["created_by"] == "user.dave" and conversation["title"] is None


@pytest.mark.parametrize("tool", ["get_conversation", "history"])
async def test_unknown_conversation_is_not_found(bus: InMemoryBus, rogers: Rogers, tool: str) -> None:
    missing = new_id()
    reply = await request(bus, "rogers", tool, {"conversation_id": missing})
    assert reply.error is not None and reply.error.code == "not_found"
    assert missing in reply.error.message


@pytest.mark.parametrize(
    ("tool", "arguments", "fields"),
    [
        ("history", {"limit": 0}, {"content.0.arguments.conversation_id", "content.0.arguments.limit"}),
        ("history", {"conversation_id": "x", "direction": "sideways"}, {"content.0.arguments.direction"}),
        ("history", {"conversation_id": "x", "cursor": "not-an-id"}, {"content.0.arguments.cursor"}),
        ("list_conversations", {"limit": 0}, {"content.0.arguments.limit"}),
        ("list_conversations", {"cursor": "%%%"}, {"content.0.arguments.cursor"}),
        ("search", {}, {"content.0.arguments.query"}),
        ("search", {"query": "ok", "limit": 5000}, {"content.0.arguments.limit"}),
        ("create_conversation", {"titel": "typo"}, {"content.0.arguments.titel"}),
        ("sync", {"now": True}, {"content.0.arguments.now"}),
    ],
)
async def test_invalid_arguments_name_the_field(
    bus: InMemoryBus, rogers: Rogers, tool: str, arguments: dict, fields: set[str]
) -> None:
    bad = Envelope(
        sender="user.tester",
        recipient="rogers",
        kind=Kind.REQUEST,
        content=[CommandPart(tool=tool, arguments=arguments)],
    )
    reply = await bus.request(bad)
    assert reply.error is not None and reply.error.code == "invalid_arguments"
    assert {f.field for f in reply.error.fields} == fields
    await call(bus, "sync")
    rows = await stored_rows(rogers)
    assert bad.id in rows and reply.id in rows  # the refused request and its error are kept too


async def test_prose_is_indexed_from_requests_and_errors(bus: InMemoryBus, rogers: Rogers, echo: Echo) -> None:
    cid = new_id()
    prose = Envelope(
        sender="user.alice",
        recipient="echo",
        kind=Kind.REQUEST,
        conversation_id=cid,
        content=[ProsePart(text="please summarise the quarterly numbers")],
    )
    reply = await bus.request(prose)
    assert reply.error is not None  # echo takes no prose: the bus refuses it
    await call(bus, "sync")
    hits = (await call(bus, "search", {"query": "quarterly", "conversation_id": cid}))["hits"]
    assert [h["id"] for h in hits] == [prose.id]
    refusal = (await call(bus, "search", {"query": "accept prose", "conversation_id": cid}))["hits"]
    assert [h["id"] for h in refusal] == [reply.id]


async def test_stop_writes_everything_tapped(tmp_path) -> None:
    bus = InMemoryBus()
    await bus.start()
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
    await rogers.start()
    events = [note(None, f"burst {i}") for i in range(300)]
    for event in events:
        await bus.publish(event)
    await bus.close()  # drains the wiretap
    await rogers.stop()  # writes what was tapped
    rows = await stored_rows(rogers)
    assert all(e.id in rows for e in events)
    assert all(json.loads(rows[e.id][2])["id"] == e.id for e in events)


def test_config_rejects_unknown_and_bad_keys() -> None:
    with pytest.raises(ValidationError) as caught:
        RogersConfig.model_validate({"db_file": "x.db", "batch_max": 0, "db_filename": "../escape.db"})
    assert {e["loc"][0] for e in caught.value.errors()} == {"db_file", "batch_max", "db_filename"}


async def test_tools_are_described_for_an_llm(bus: InMemoryBus, rogers: Rogers) -> None:
    descriptors = {d["name"]: d for d in rogers.tool_descriptors()}
    assert set(descriptors) == {
        "sync",
        "create_conversation",
        "list_conversations",
        "get_conversation",
        "history",
        "search",
        "stats",
        "attach_artifact",
        "list_artifacts",
        "read_artifact",
        "storage",
        "claim_idempotency_key",
    }
    assert descriptors["storage"].get("internal") is True
    llm_tools = {name for name, t in rogers.tools().items() if t.for_llm}
    assert "read_artifact" not in llm_tools and "attach_artifact" not in llm_tools and "list_artifacts" in llm_tools
    assert descriptors["claim_idempotency_key"].get("internal") is True
    for descriptor in descriptors.values():
        assert len(descriptor["description"]) > 30
        assert descriptor["inputSchema"]["additionalProperties"] is False
    history = descriptors["history"]["inputSchema"]
    assert history["required"] == ["conversation_id"]
    assert history["properties"]["limit"]["minimum"] == 1
