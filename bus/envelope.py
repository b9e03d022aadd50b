"""The one envelope for all bus traffic.

Every message — a user's chat line, a tool call between MADs, a reply, an audit
event — is an :class:`Envelope`. Besides who sent it, an envelope says whom the work
serves (its :class:`Principal`, a person or the system), which turn of a person it
belongs to, and the chain of MADs it came through: the authority every receiver
checks, carried unchanged from the gateway through every hop. Unknown fields are rejected everywhere
(``extra="forbid"``) so a hallucinated or misspelt field is an error, not silently
ignored data. Content is a list of typed parts: a deterministic **command** (tool +
arguments), fixed **data** (media type + JSON value) or **prose** (text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from bus.ids import ID_PATTERN, new_id

ADDRESS_PATTERN = r"^[a-z_][a-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$"
"""A MAD name (``rogers``), an instance (``hopper.01J…``) or a topic (``events.validation``)."""

TOOL_PATTERN = r"^[a-z][a-z0-9_]*$"
PRINCIPAL_NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
"""A person's name as the gateway knows it (``alice``); ``system`` is reserved for the system itself."""
MAX_CHAIN = 16
"""MADs one piece of work may pass through: deeper is a loop (handoffs forever), refused by the runtime."""
MAX_PARTS = 64
MAX_TEXT = 1_000_000

ERROR_MEDIA_TYPE = "application/vnd.mad.error+json"
SECRET_MEDIA_TYPE = "application/vnd.mad.secret+json"
"""A data part carrying a secret value: wiretap consumers (Rogers) must strip it, never store it."""
DELTA_MEDIA_TYPE = "application/vnd.mad.delta+json"
JSON_MEDIA_TYPE = "application/json"


class Strict(BaseModel):
    """Base for every boundary model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Kind(StrEnum):
    REQUEST = "request"
    REPLY = "reply"
    EVENT = "event"
    ERROR = "error"


class CommandPart(Strict):
    """A deterministic tool invocation: runs without an LLM, zero tokens."""

    type: Literal["command"] = "command"
    tool: str = Field(pattern=TOOL_PATTERN, max_length=64)
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class DataPart(Strict):
    """Fixed data: a JSON value labelled with a media type."""

    type: Literal["data"] = "data"
    media_type: str = Field(default=JSON_MEDIA_TYPE, pattern=r"^[a-z]+/[A-Za-z0-9.+\-]+$", max_length=128)
    value: JsonValue


class ProsePart(Strict):
    """Natural language, for an Imperator (LLM) to interpret."""

    type: Literal["prose"] = "prose"
    text: str = Field(min_length=1, max_length=MAX_TEXT)


Part = Annotated[CommandPart | DataPart | ProsePart, Field(discriminator="type")]


class Principal(Strict):
    """Whom a piece of work serves: a person in their role, or the system itself.

    Set by the gateway from the authenticated session (``user`` or ``operator``), or
    ``system`` for work no person asked for (start-up, schedules, a MAD's own upkeep).
    An action is allowed only if both the acting MAD and the principal may do it, so an
    LLM working for a person never holds more authority than that person.
    """

    kind: Literal["user", "operator", "system"]
    name: str = Field(pattern=PRINCIPAL_NAME_PATTERN)

    @model_validator(mode="after")
    def _system_is_reserved(self) -> Principal:
        if (self.kind == "system") != (self.name == SYSTEM_NAME):
            raise ValueError(f"the name {SYSTEM_NAME!r} is the system's and only the system's")
        return self

    @property
    def is_person(self) -> bool:
        return self.kind != "system"

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def __str__(self) -> str:
        return SYSTEM_NAME if self.kind == "system" else f"{self.kind}:{self.name}"


SYSTEM_NAME = "system"
SYSTEM = Principal(kind="system", name=SYSTEM_NAME)
"""The principal of work no person asked for."""


class TraceContext(Strict):
    """W3C trace context, carried so one trace spans every bus hop."""

    traceparent: str = Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    tracestate: str | None = Field(default=None, max_length=512)


_now: Callable[[], datetime] = partial(datetime.now, UTC)
"""The current time, timezone-aware (a ``partial``: called for every envelope, without a Python frame)."""


class Envelope(Strict):
    """A message on the bus. Sortable id; replies carry the request id as ``correlation_id``."""

    id: str = Field(default_factory=new_id, pattern=ID_PATTERN)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    sender: str = Field(pattern=ADDRESS_PATTERN, max_length=128)
    recipient: str = Field(pattern=ADDRESS_PATTERN, max_length=128)
    reply_to: str | None = Field(default=None, pattern=ADDRESS_PATTERN, max_length=128)
    kind: Kind
    correlation_id: str | None = Field(default=None, pattern=ID_PATTERN)
    created_at: datetime = Field(default_factory=_now)
    deadline: datetime | None = None
    trace: TraceContext | None = None
    principal: Principal = SYSTEM
    """Whom this work serves; replies and every sub-request carry it unchanged."""
    turn: str | None = Field(default=None, pattern=ID_PATTERN)
    """The id of the person's message that started this work (budgets per turn count by it)."""
    chain: tuple[Annotated[str, Field(pattern=ADDRESS_PATTERN, max_length=128)], ...] = Field(
        default=(), max_length=MAX_CHAIN
    )
    """The MADs this work came through before this envelope, oldest first, its sender last (audit: who acted)."""
    content: list[Part] = Field(min_length=1, max_length=MAX_PARTS)

    def reply(self, *parts: CommandPart | DataPart | ProsePart, sender: str | None = None) -> Envelope:
        """A reply to this envelope, addressed to whoever asked."""
        fast = _derive(self, _REPLY, sender or self.recipient, parts, self.deadline, _REPLY_FIELDS_SET)
        if fast is not None:
            return fast
        return Envelope(
            conversation_id=self.conversation_id,
            sender=sender or self.recipient,
            recipient=self.reply_to or self.sender,
            kind=Kind.REPLY,
            correlation_id=self.id,
            deadline=self.deadline,
            trace=self.trace,
            principal=self.principal,
            turn=self.turn,
            chain=self.chain,
            content=list(parts),
        )

    def error_reply(self, error: ErrorInfo, sender: str | None = None) -> Envelope:
        """A typed failure reply: never a raw string, always an :class:`ErrorInfo`."""
        sender = sender or _safe_sender(self.recipient)
        content = (DataPart(media_type=ERROR_MEDIA_TYPE, value=error.model_dump(mode="json")),)
        fast = _derive(self, _ERROR, sender, content, None, _ERROR_FIELDS_SET)
        if fast is not None:
            return fast
        return Envelope(
            conversation_id=self.conversation_id,
            sender=sender,
            recipient=self.reply_to or self.sender,
            kind=Kind.ERROR,
            correlation_id=self.id,
            trace=self.trace,
            principal=self.principal,
            turn=self.turn,
            chain=self.chain,
            content=list(content),
        )

    def expired(self, now: datetime | None = None) -> bool:
        return self.deadline is not None and (now or _now()) >= self.deadline

    def remaining(self, now: datetime | None = None) -> float | None:
        """Seconds left before the deadline (never negative), or ``None`` if there is none."""
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - (now or _now())).total_seconds())

    @property
    def error(self) -> ErrorInfo | None:
        """The :class:`ErrorInfo` carried by an error envelope."""
        if self.kind is not Kind.ERROR:
            return None
        for part in self.content:
            if isinstance(part, DataPart) and part.media_type == ERROR_MEDIA_TYPE:
                return ErrorInfo.model_validate(part.value)
        return ErrorInfo(code="malformed_error", message="error envelope without an error part")

    def text(self) -> str:
        """All prose parts joined: what a person would read."""
        return "\n".join(p.text for p in self.content if isinstance(p, ProsePart))

    def data(self, media_type: str | None = None) -> list[JsonValue]:
        return [
            p.value
            for p in self.content
            if isinstance(p, DataPart) and (media_type is None or p.media_type == media_type)
        ]


_PART_TYPES = frozenset({CommandPart, DataPart, ProsePart})
_REPLY_FIELDS_SET = frozenset(
    {
        "conversation_id",
        "sender",
        "recipient",
        "kind",
        "correlation_id",
        "deadline",
        "trace",
        "principal",
        "turn",
        "chain",
        "content",
    }
)
"""The fields a reply passes explicitly (so ``model_dump(exclude_unset=True)`` matches a validated one)."""
_ERROR_FIELDS_SET = _REPLY_FIELDS_SET - {"deadline"}
_ADDRESS_RE = re.compile(ADDRESS_PATTERN.removeprefix("^").removesuffix("$"))
_CONVERSATION_RE = re.compile(r"[A-Za-z0-9_\-]+")
_HEX_DIGITS = "0123456789abcdef"
_MEMO_LIMIT = 4096
_known_addresses: set[str] = set()
_known_conversations: set[str] = set()
_new = object.__new__
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_REPLY, _ERROR = Kind.REPLY, Kind.ERROR


def _is_address(value: object) -> bool:
    """Exactly what ``Field(pattern=ADDRESS_PATTERN, max_length=128)`` accepts from an exact ``str``.

    ``fullmatch`` without anchors, because Python's ``$`` also matches before a final
    newline and pydantic's (Rust) one does not. Addresses repeat, so results are memoised.
    """
    if type(value) is not str:
        return False
    if value in _known_addresses:
        return True
    if len(value) > 128 or _ADDRESS_RE.fullmatch(value) is None:
        return False
    if len(_known_addresses) >= _MEMO_LIMIT:
        _known_addresses.clear()
    _known_addresses.add(value)
    return True


def _is_conversation(value: object) -> bool:
    """Exactly what the ``conversation_id`` field accepts (``None`` included), memoised."""
    if value is None:
        return True
    if type(value) is not str:
        return False
    if value in _known_conversations:
        return True
    if not 1 <= len(value) <= 64 or _CONVERSATION_RE.fullmatch(value) is None:
        return False
    if len(_known_conversations) >= _MEMO_LIMIT:
        _known_conversations.clear()
    _known_conversations.add(value)
    return True


def _is_id(value: object) -> bool:
    """Exactly what ``Field(pattern=ID_PATTERN)`` accepts: 32 characters, all lowercase hex digits."""
    return type(value) is str and len(value) == 32 and not value.strip(_HEX_DIGITS)


def _derive(
    source: Envelope,
    kind: Kind,
    sender: str,
    parts: tuple[CommandPart | DataPart | ProsePart, ...],
    deadline: datetime | None,
    fields_set: frozenset[str],
) -> Envelope | None:
    """A reply or error to ``source`` without re-validating what is already known to be valid.

    A reply is made of the request's own fields, part instances and a sender. Each value
    is still checked against exactly its field's constraint (as in :func:`_assemble`), so a
    request built without validation (``model_construct``) never lends its fields to a
    reply. ``None`` means a check failed: the caller then builds the envelope with full
    validation, which raises the usual error naming the field. The equivalence is
    property-tested (``tests/bus/test_envelope_fastpath.py``).
    """
    fields = source.__dict__
    recipient = fields["reply_to"] or fields["sender"]
    correlation_id = fields["id"]
    if not (
        _is_address(sender)
        and _is_address(recipient)
        and _is_id(correlation_id)
        and _is_context(fields)
        and (deadline is None or type(deadline) is datetime)
        and 1 <= len(parts) <= MAX_PARTS
        and _PART_TYPES.issuperset(map(type, parts))
    ):
        return None
    fields = fields.copy()  # the request's conversation, trace, principal, turn and chain: checked above
    fields["id"] = new_id()
    fields["sender"] = sender
    fields["recipient"] = recipient
    fields["reply_to"] = None
    fields["kind"] = kind
    fields["correlation_id"] = correlation_id
    fields["created_at"] = _now()
    fields["deadline"] = deadline
    fields["content"] = list(parts)
    return _instance(fields, fields_set)


def _is_context(fields: dict[str, Any]) -> bool:
    """The fields a reply copies from its request unchanged pass exactly their constraints."""
    turn, chain = fields["turn"], fields["chain"]
    trace = fields["trace"]
    return (
        _is_conversation(fields["conversation_id"])
        and (trace is None or type(trace) is TraceContext)
        and type(fields["principal"]) is Principal
        and (turn is None or _is_id(turn))
        and type(chain) is tuple
        and (not chain or (len(chain) <= MAX_CHAIN and all(map(_is_address, chain))))
    )


def _instance(fields: dict[str, Any], fields_set: frozenset[str]) -> Envelope:
    """An :class:`Envelope` of already-checked ``fields``, as pydantic's own constructor leaves one."""
    envelope = _new(Envelope)
    _set_dict(envelope, "__dict__", fields)
    _set_fields_set(envelope, set(fields_set))
    _set_extra(envelope, None)
    _set_private(envelope, None)
    return envelope


def _assemble(
    conversation_id: str | None,
    sender: str,
    recipient: str,
    reply_to: str | None,
    kind: Kind,
    correlation_id: str | None,
    deadline: datetime | None,
    trace: TraceContext | None,
    principal: Principal,
    turn: str | None,
    chain: tuple[str, ...],
    parts: tuple[CommandPart | DataPart | ProsePart, ...] | list[CommandPart | DataPart | ProsePart],
    fields_set: frozenset[str],
) -> Envelope | None:
    """An envelope of these values if each passes exactly the constraint its field declares, else ``None``.

    Strings are checked against their field's pattern and length (memoised for addresses
    and conversations, which repeat); part, trace and principal instances are accepted as
    they are, as full validation accepts them (``revalidate_instances="never"``); the id and
    creation time are made here, as their defaults would be.
    """
    if not (
        _is_address(sender)
        and _is_address(recipient)
        and (reply_to is None or _is_address(reply_to))
        and type(kind) is Kind
        and (correlation_id is None or _is_id(correlation_id))
        and (conversation_id is None or _is_conversation(conversation_id))
        and (deadline is None or type(deadline) is datetime)
        and (trace is None or type(trace) is TraceContext)
        and type(principal) is Principal
        and (turn is None or _is_id(turn))
        and type(chain) is tuple
        and (not chain or (len(chain) <= MAX_CHAIN and all(map(_is_address, chain))))
        and 1 <= len(parts) <= MAX_PARTS
        and _PART_TYPES.issuperset(map(type, parts))
    ):
        return None
    return _instance(
        {
            "id": new_id(),
            "conversation_id": conversation_id,
            "sender": sender,
            "recipient": recipient,
            "reply_to": reply_to,
            "kind": kind,
            "correlation_id": correlation_id,
            "created_at": _now(),
            "deadline": deadline,
            "trace": trace,
            "principal": principal,
            "turn": turn,
            "chain": chain,
            "content": list(parts),
        },
        fields_set,
    )


_TRUSTED_FIELDS_SET = _REPLY_FIELDS_SET | {"reply_to"}


def trusted_envelope(
    *,
    sender: str,
    recipient: str,
    kind: Kind,
    content: list[CommandPart | DataPart | ProsePart] | tuple[CommandPart | DataPart | ProsePart, ...],
    conversation_id: str | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    deadline: datetime | None = None,
    trace: TraceContext | None = None,
    principal: Principal = SYSTEM,
    turn: str | None = None,
    chain: tuple[str, ...] = (),
) -> Envelope:
    """An envelope built by the process's own code (a MAD's request or event), validated once.

    Its parts, principal and trace are instances already validated when they were built;
    the strings are checked against exactly their fields' constraints. Nothing is
    validated twice, and what full validation would refuse is never built: on any doubt
    this falls back to ``Envelope(...)``, which raises the usual error naming the field.
    Property-tested against full validation (``tests/bus/test_envelope_fastpath.py``).
    What enters from outside (the gateway's input, Redis, an LLM) is parsed with full
    validation instead (:func:`parse_envelope`, the part models).
    """
    fast = _assemble(
        conversation_id,
        sender,
        recipient,
        reply_to,
        kind,
        correlation_id,
        deadline,
        trace,
        principal,
        turn,
        chain,
        content,
        _TRUSTED_FIELDS_SET,
    )
    if fast is not None:
        return fast
    return Envelope(
        sender=sender,
        recipient=recipient,
        reply_to=reply_to,
        kind=kind,
        conversation_id=conversation_id,
        correlation_id=correlation_id,
        deadline=deadline,
        trace=trace,
        principal=principal,
        turn=turn,
        chain=chain,
        content=list(content),
    )


def _safe_sender(address: str) -> str:
    return address if not address.startswith("events.") else "bus"


def deadline_in(seconds: float) -> datetime:
    return _now() + timedelta(seconds=seconds)


class FieldError(Strict):
    """One invalid field: where (dotted path) and why."""

    field: str
    reason: str


class ErrorInfo(Strict):
    """What went wrong, with the fields to blame. Carried by every error reply."""

    code: str = Field(max_length=64)
    message: str = Field(max_length=4000)
    fields: list[FieldError] = Field(default_factory=list)
    retryable: bool = False


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Turn a pydantic error into named fields with reasons (never echoing the bad value)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in err["loc"])
        out.append(FieldError(field=f"{prefix}{'.' if prefix and loc else ''}{loc}" or "(root)", reason=err["msg"]))
    return out


def validation_error(exc: ValidationError, prefix: str = "", code: str = "invalid_message") -> ErrorInfo:
    fields = field_errors(exc, prefix)
    summary = "; ".join(f"{f.field}: {f.reason}" for f in fields[:5])
    return ErrorInfo(code=code, message=f"validation failed: {summary}", fields=fields)


def parse_envelope(raw: str | bytes | dict[str, Any]) -> Envelope:
    """Validate an envelope arriving from outside the process (gateway, Redis)."""
    if isinstance(raw, dict):
        return Envelope.model_validate(raw)
    return Envelope.model_validate_json(raw)


def envelope_json_schema() -> dict[str, Any]:
    """The exportable JSON Schema of the envelope (every part type included)."""
    return Envelope.model_json_schema(mode="validation")


if __name__ == "__main__":
    print(json.dumps(envelope_json_schema(), indent=2))
