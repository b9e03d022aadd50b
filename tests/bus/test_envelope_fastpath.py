"""The trusted constructor behind ``reply``/``error_reply`` never makes what full validation would reject.

Replies are derived from a request's own (validated) fields, already-validated part
instances and a sender. The fast path re-checks each copied value against the
exact constraint of its field and falls back to full validation on any doubt; these
properties pin that equivalence down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from bus.envelope import (
    _TRUSTED_FIELDS_SET,
    ADDRESS_PATTERN,
    MAX_CHAIN,
    SYSTEM,
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    Kind,
    Principal,
    ProsePart,
    TraceContext,
    _assemble,
    _derive,
    _is_address,
    _is_conversation,
    _is_id,
    trusted_envelope,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = Envelope.model_fields
# Built from the live field definitions, so a changed constraint fails here until the fast path follows.
ADDRESS = TypeAdapter(Annotated[(str, *FIELDS["sender"].metadata)])
CONVERSATION = TypeAdapter(Annotated[(str | None, *FIELDS["conversation_id"].metadata)])
IDENTIFIER = TypeAdapter(Annotated[(str, *FIELDS["correlation_id"].metadata)])


def test_every_copied_field_has_the_constraint_its_check_implements() -> None:
    same = repr  # pydantic's metadata objects compare by identity; their reprs list every constraint
    assert same(FIELDS["recipient"].metadata) == same(FIELDS["sender"].metadata) == same(FIELDS["reply_to"].metadata)
    assert same(FIELDS["id"].metadata) == same(FIELDS["correlation_id"].metadata)
    assert FIELDS["deadline"].annotation == datetime | None and not FIELDS["deadline"].metadata
    assert FIELDS["trace"].annotation == TraceContext | None and not FIELDS["trace"].metadata


def accepts(adapter: TypeAdapter[Any], value: object) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


addresses = st.from_regex(ADDRESS_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 128)
conversations = st.none() | st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
parts = st.one_of(
    st.builds(
        CommandPart,
        tool=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        arguments=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    st.builds(DataPart, value=json_values),
    st.builds(ProsePart, text=st.text(min_size=1, max_size=40)),
)
deadlines = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.none() | st.just(UTC)
)
traces = st.none() | st.builds(
    TraceContext,
    traceparent=st.from_regex(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True),
    tracestate=st.none() | st.text(max_size=30),
)
principals = st.just(SYSTEM) | st.builds(
    Principal,
    kind=st.sampled_from(["user", "operator"]),
    name=st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True).filter(lambda n: n != "system"),
)
ids = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
requests = st.builds(
    Envelope,
    conversation_id=conversations,
    sender=addresses,
    recipient=addresses,
    reply_to=st.none() | addresses,
    kind=st.sampled_from(list(Kind)),
    deadline=deadlines,
    trace=traces,
    principal=principals,
    turn=st.none() | ids,
    chain=st.lists(addresses, max_size=MAX_CHAIN).map(tuple),
    content=st.lists(parts, min_size=1, max_size=4),
)
# Arbitrary strings, plus near misses of each constraint (newline endings, capitals, lengths).
hostile = st.one_of(
    st.text(max_size=140),
    addresses.map(lambda s: s + "\n"),
    addresses.map(str.upper),
    st.text(alphabet="abcdef0123456789ABCDEF\n", min_size=30, max_size=34),
    st.just("a" * 129),
    st.just("a" * 128),
)


def slow_reply(request: Envelope, fast: Envelope, parts: tuple[Any, ...], sender: str | None) -> Envelope:
    """What ``reply`` built before the fast path: every field through full validation."""
    return Envelope(
        id=fast.id,
        created_at=fast.created_at,
        conversation_id=request.conversation_id,
        sender=sender or request.recipient,
        recipient=request.reply_to or request.sender,
        kind=Kind.REPLY,
        correlation_id=request.id,
        deadline=request.deadline,
        trace=request.trace,
        principal=request.principal,
        turn=request.turn,
        chain=request.chain,
        content=list(parts),
    )


def assert_same(fast: Envelope, slow: Envelope) -> None:
    assert fast == slow
    for name in Envelope.model_fields:
        assert getattr(fast, name) == getattr(slow, name), name
        assert type(getattr(fast, name)) is type(getattr(slow, name)), name
    assert fast.model_fields_set == slow.model_fields_set - {"id", "created_at"}  # given above only to compare
    assert Envelope.model_validate(fast.model_dump()) == fast
    assert Envelope.model_validate_json(fast.model_dump_json()) == Envelope.model_validate_json(slow.model_dump_json())


@SETTINGS
@given(request=requests, parts=st.lists(parts, min_size=1, max_size=5).map(tuple), sender=st.none() | addresses)
def test_fast_reply_equals_fully_validated_reply(request: Envelope, parts: tuple[Any, ...], sender: str | None) -> None:
    fast = request.reply(*parts, sender=sender)
    assert _derive(request, Kind.REPLY, sender or request.recipient, parts, request.deadline, frozenset()) is not None
    assert_same(fast, slow_reply(request, fast, parts, sender))


@SETTINGS
@given(request=requests, code=st.text(max_size=64), message=st.text(max_size=200), sender=st.none() | addresses)
def test_fast_error_reply_equals_fully_validated_one(
    request: Envelope, code: str, message: str, sender: str | None
) -> None:
    error = ErrorInfo(code=code, message=message)
    fast = request.error_reply(error, sender=sender)
    slow = Envelope(
        id=fast.id,
        created_at=fast.created_at,
        conversation_id=request.conversation_id,
        sender=sender or ("bus" if request.recipient.startswith("events.") else request.recipient),
        recipient=request.reply_to or request.sender,
        kind=Kind.ERROR,
        correlation_id=request.id,
        trace=request.trace,
        principal=request.principal,
        turn=request.turn,
        chain=request.chain,
        content=[DataPart(media_type="application/vnd.mad.error+json", value=error.model_dump(mode="json"))],
    )
    assert_same(fast, slow)
    assert fast.error == error


@SETTINGS
@given(request=requests, sender=hostile)
def test_any_sender_is_accepted_exactly_when_full_validation_accepts_it(request: Envelope, sender: str) -> None:
    part = ProsePart(text="x")
    try:
        expected = slow_reply(request, request.reply(part), (part,), sender)
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            request.reply(part, sender=sender)
        assert fast_error.value.errors() == slow_error.errors()
    else:
        fast = request.reply(part, sender=sender)
        assert fast.sender == expected.sender


@SETTINGS
@given(
    request=requests,
    field=st.sampled_from(["id", "sender", "reply_to", "recipient", "conversation_id", "turn", "chain", "trace"]),
    bad=hostile,
)
def test_a_reply_takes_no_field_of_an_unvalidated_request_on_trust(request: Envelope, field: str, bad: str) -> None:
    """A reply copies its request's fields: each copied value is re-checked, so a request built with
    ``model_construct`` (no validation) yields a reply exactly when full validation would accept it."""
    value: object = (bad,) if field == "chain" else bad
    forged = Envelope.model_construct(**{**dict(request), field: value})
    part = ProsePart(text="x")
    try:
        expected = Envelope(
            conversation_id=forged.conversation_id,
            sender=forged.recipient,
            recipient=forged.reply_to or forged.sender,
            kind=Kind.REPLY,
            correlation_id=forged.id,
            deadline=forged.deadline,
            trace=forged.trace,
            principal=forged.principal,
            turn=forged.turn,
            chain=forged.chain,
            content=[part],
        )
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            forged.reply(part)
        assert fast_error.value.errors() == slow_error.errors()
    else:
        reply = forged.reply(part)
        assert reply.model_dump(exclude={"id", "created_at"}) == expected.model_dump(exclude={"id", "created_at"})
        assert Envelope.model_validate(reply.model_dump()) == reply


@SETTINGS
@given(value=hostile | addresses)
def test_field_checks_match_the_declared_constraints(value: str) -> None:
    assert _is_address(value) == accepts(ADDRESS, value)
    assert _is_address(value) == accepts(ADDRESS, value)  # second time from the memo
    assert _is_conversation(value) == accepts(CONVERSATION, value)
    assert _is_id(value) == accepts(IDENTIFIER, value)


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a"], "a\n", "A", "", "0" * 31, "0" * 33, "0" * 31 + "g"])
def test_non_strings_and_edge_cases_are_not_trusted(value: object) -> None:
    assert _is_address(value) == (isinstance(value, str) and accepts(ADDRESS, value))
    assert _is_id(value) == (isinstance(value, str) and accepts(IDENTIFIER, value))


def test_unvalidated_request_falls_back_to_full_validation_naming_the_field() -> None:
    """An envelope built with ``model_construct`` skipped validation; its reply must not."""
    forged = Envelope.model_construct(
        id="not-an-id", sender="Robert'); DROP TABLE", recipient="rogers", kind=Kind.REQUEST, content=[]
    )
    with pytest.raises(ValidationError) as info:
        forged.reply(ProsePart(text="x"))
    assert {err["loc"][0] for err in info.value.errors()} == {"recipient", "correlation_id"}


def test_part_count_and_part_types_are_checked() -> None:
    request = Envelope(sender="grace", recipient="rogers", kind=Kind.REQUEST, content=[ProsePart(text="hi")])
    with pytest.raises(ValidationError) as info:
        request.reply()
    assert info.value.errors()[0]["loc"] == ("content",)
    with pytest.raises(ValidationError):
        request.reply(*[ProsePart(text="x")] * 65)
    with pytest.raises(ValidationError):
        request.reply({"type": "prose", "text": ""})  # type: ignore[arg-type]
    assert request.reply(*[ProsePart(text="x")] * 64).content == [ProsePart(text="x")] * 64


def test_reply_keeps_a_timezone_aware_deadline_and_trace_by_reference() -> None:
    deadline = datetime.now(timezone(timedelta(hours=2))) + timedelta(seconds=5)
    trace = TraceContext(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    request = Envelope(
        sender="grace",
        recipient="rogers",
        kind=Kind.REQUEST,
        content=[ProsePart(text="hi")],
        deadline=deadline,
        trace=trace,
    )
    reply = request.reply(ProsePart(text="ok"))
    assert reply.deadline == deadline and reply.trace is trace
    assert reply.id != request.id and reply.id > request.id
    with pytest.raises(ValidationError):
        reply.sender = "x"  # type: ignore[misc]  # still frozen


envelope_fields = st.fixed_dictionaries(
    {
        "sender": addresses,
        "recipient": addresses,
        "kind": st.sampled_from(list(Kind)),
        "content": st.lists(parts, min_size=1, max_size=4),
        "conversation_id": conversations,
        "reply_to": st.none() | addresses,
        "correlation_id": st.none() | ids,
        "deadline": deadlines,
        "trace": traces,
        "principal": principals,
        "turn": st.none() | ids,
        "chain": st.lists(addresses, max_size=MAX_CHAIN).map(tuple),
    }
)


@SETTINGS
@given(fields=envelope_fields)
def test_trusted_envelope_passes_full_validation_and_equals_it(fields: dict[str, Any]) -> None:
    trusted = trusted_envelope(**fields)
    assert _assemble_took_the_fast_path(fields)
    assert_same(trusted, Envelope(id=trusted.id, created_at=trusted.created_at, **fields))


@SETTINGS
@given(
    fields=envelope_fields,
    field=st.sampled_from(["sender", "recipient", "reply_to", "conversation_id"]),
    bad=hostile,
)
def test_trusted_envelope_refuses_exactly_what_full_validation_refuses(
    fields: dict[str, Any], field: str, bad: str
) -> None:
    fields = {**fields, field: bad}
    try:
        expected = Envelope(**fields)
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            trusted_envelope(**fields)
        assert fast_error.value.errors() == slow_error.errors()
    else:
        assert getattr(trusted_envelope(**fields), field) == getattr(expected, field)


@SETTINGS
@given(fields=envelope_fields, turn=hostile, chain=st.lists(hostile, max_size=MAX_CHAIN + 2).map(tuple))
def test_trusted_envelope_with_bad_ids_or_chains_fails_as_full_validation_does(
    fields: dict[str, Any], turn: str, chain: tuple[str, ...]
) -> None:
    fields = {**fields, "turn": turn, "chain": chain}
    try:
        Envelope(**fields)
    except ValidationError as slow_error:
        with pytest.raises(ValidationError) as fast_error:
            trusted_envelope(**fields)
        assert fast_error.value.errors() == slow_error.errors()
    else:
        trusted_envelope(**fields)


def _assemble_took_the_fast_path(fields: dict[str, Any]) -> bool:
    return (
        _assemble(
            fields["conversation_id"],
            fields["sender"],
            fields["recipient"],
            fields["reply_to"],
            fields["kind"],
            fields["correlation_id"],
            fields["deadline"],
            fields["trace"],
            fields["principal"],
            fields["turn"],
            fields["chain"],
            fields["content"],
            _TRUSTED_FIELDS_SET,
        )
        is not None
    )


def test_a_part_built_without_validation_is_not_trusted() -> None:
    """Only validated part instances ride the fast path; anything else goes through full validation."""
    with pytest.raises(ValidationError):
        trusted_envelope(sender="a", recipient="b", kind=Kind.REQUEST, content=[{"type": "prose", "text": ""}])
    with pytest.raises(ValidationError):
        trusted_envelope(sender="a", recipient="b", kind="nonsense", content=[ProsePart(text="x")])  # type: ignore[arg-type]
