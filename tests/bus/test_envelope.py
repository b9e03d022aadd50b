"""The envelope: strict, sortable, self-describing."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from bus.envelope import (
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    Kind,
    ProsePart,
    envelope_json_schema,
    parse_envelope,
    validation_error,
)
from bus.ids import new_id


def make(**overrides) -> Envelope:
    fields = {"sender": "grace", "recipient": "rogers", "kind": Kind.REQUEST, "content": [ProsePart(text="hi")]}
    fields.update(overrides)
    return Envelope(**fields)


def test_ids_are_unique_and_sortable() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_unknown_field_rejected_by_name() -> None:
    raw = make().model_dump(mode="json")
    raw["priority"] = "high"
    with pytest.raises(ValidationError) as info:
        parse_envelope(json.dumps(raw))
    error = validation_error(info.value)
    assert error.fields[0].field == "priority"
    assert "Extra inputs are not permitted" in error.fields[0].reason


def test_unknown_field_inside_a_part_rejected() -> None:
    raw = make().model_dump(mode="json")
    raw["content"][0]["tone"] = "loud"
    with pytest.raises(ValidationError) as info:
        parse_envelope(raw)
    assert validation_error(info.value).fields[0].field == "content.0.prose.tone"


def test_part_type_is_discriminated() -> None:
    raw = make().model_dump(mode="json")
    raw["content"] = [{"type": "telepathy", "text": "?"}]
    with pytest.raises(ValidationError) as info:
        parse_envelope(raw)
    assert "content.0" in validation_error(info.value).fields[0].field


def test_empty_content_rejected() -> None:
    with pytest.raises(ValidationError):
        make(content=[])


def test_bad_address_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make(recipient="Robert'); DROP TABLE")
    assert validation_error(info.value).fields[0].field == "recipient"


def test_json_round_trip_preserves_everything() -> None:
    envelope = make(
        content=[
            CommandPart(tool="search", arguments={"query": "x", "n": [1, 2, {"a": None}]}),
            DataPart(media_type="application/json", value={"k": 1.5}),
            ProsePart(text="héllo ✓"),
        ],
        conversation_id="c-1",
    )
    again = parse_envelope(envelope.model_dump_json())
    assert again == envelope


def test_reply_and_error_reply_address_the_requester() -> None:
    request = make(reply_to="_inbox.proc1")
    reply = request.reply(ProsePart(text="ok"))
    assert reply.kind is Kind.REPLY
    assert reply.correlation_id == request.id
    assert reply.recipient == "_inbox.proc1"
    error = request.error_reply(ErrorInfo(code="nope", message="no"))
    assert error.kind is Kind.ERROR
    assert error.error == ErrorInfo(code="nope", message="no")
    assert make().reply(ProsePart(text="x")).recipient == "grace"


def test_json_schema_is_exportable_and_forbids_extras() -> None:
    schema = envelope_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"sender", "recipient", "kind", "content"}
    assert {"CommandPart", "DataPart", "ProsePart"} <= set(schema["$defs"])
    json.dumps(schema)
