"""Rogers's boundary models: configuration, tool arguments and tool results.

Argument models forbid unknown fields and carry the limits, so the bus contract
rejects bad calls (naming the field) before a tool runs, and an LLM sees the same
rules in each tool's JSON Schema.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from bus.envelope import ADDRESS_PATTERN
from bus.ids import ID_PATTERN
from mads.core.artifacts import MAX_ARTIFACT_BYTES, NAME_PATTERN, ArtifactRef

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_\-]+$"
MAX_LIMIT = 1000
"""The largest ``limit`` any tool accepts; the configured ``page_max`` may lower it further."""


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RogersConfig(BaseModel):
    """Rogers's configuration section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db_filename: str = Field(default="conversations.db", pattern=r"^[A-Za-z0-9_\-]+\.db$", max_length=64)
    batch_max: int = Field(default=512, ge=1, le=10_000)
    """Most envelopes written in one transaction (one fsync)."""
    queue_max: int = Field(default=4096, ge=1, le=1_000_000)
    """Envelopes tapped but not yet written; when full, the wiretap (and so the bus) waits."""
    page_max: int = Field(default=200, ge=1, le=MAX_LIMIT)
    """Largest page returned by history, list_conversations and search; bigger limits are lowered to it."""
    skip_recipients: tuple[str, ...] = ("stream.*", "events.presence*", "events.storage_ledger")
    """Globs of recipients never stored: stream deltas repeat the final reply; presence heartbeats are noise;
    Rogers's own ledger goes to the audit trail (storing it here would copy every commit's counts)."""
    store_own_replies: bool = False
    """Rogers's replies are copies of what it already stores; storing them would copy every page read."""
    probe_interval_s: float = Field(default=1.0, gt=0, le=60)
    """After a storage fault (disk full, read-only, I/O error), how often a tiny write checks whether it passed."""
    low_space_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Free space under which /healthz reports the store as low_space (it still writes)."""


ConversationId = Field(min_length=1, max_length=64, pattern=CONVERSATION_ID_PATTERN)


class CreateConversationArgs(Args):
    title: str | None = Field(default=None, min_length=1, max_length=200, description="A short human title.")
    created_by: str | None = Field(
        default=None,
        pattern=ADDRESS_PATTERN,
        max_length=128,
        description="Address of the creator (e.g. user.alice); defaults to the caller.",
    )


class ListConversationsArgs(Args):
    cursor: str | None = Field(
        default=None, max_length=200, description="next_cursor from the previous page; omit for the newest page."
    )
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT, description="Most conversations to return.")
    all_owners: bool = Field(
        default=False, description="Operators only: every person's conversations, not just your own (audited)."
    )

    @field_validator("cursor")
    @classmethod
    def _cursor_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_conversation_cursor(value)
        return value


class GetConversationArgs(Args):
    conversation_id: str = ConversationId
    for_writing: bool = Field(
        default=False,
        description=(
            "Fail with storage_unavailable at once if messages cannot be stored now (before writing in it); "
            "the answer then leaves participants out."
        ),
    )


IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"


class ClaimArgs(Args):
    key: str = Field(pattern=IDEMPOTENCY_KEY_PATTERN, description="The client's Idempotency-Key.")
    conversation_id: str = ConversationId
    message_id: str = Field(pattern=ID_PATTERN, description="The id the new message will carry if the key is new.")


class Claim(BaseModel):
    """What a key stands for: ``new`` (go ahead, with message_id), ``done`` (here is the stored reply)
    or ``pending`` (the message is stored, its reply not yet)."""

    status: Literal["new", "done", "pending"]
    message_id: str
    reply: JsonValue = None


class SyncArgs(Args):
    message_ids: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Ids of messages that must be stored: if one is not (its write was refused), sync fails.",
    )

    @field_validator("message_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(ID_PATTERN, item):
                raise ValueError("each message id must be a bus id")
        return value


class HistoryArgs(Args):
    conversation_id: str = ConversationId
    cursor: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="next_cursor from the previous page (a message id); omit to start at the beginning or end.",
    )
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT, description="Most messages to return.")
    direction: Literal["forward", "backward"] = Field(
        default="forward", description="forward: oldest first; backward: newest first."
    )


_HAS_WORD = re.compile(r"\w")


class SearchArgs(Args):
    query: str = Field(
        min_length=1,
        max_length=500,
        description='Words to find (all must match). "Quoted words" match as a phrase; word* matches a prefix.',
    )
    conversation_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=CONVERSATION_ID_PATTERN)
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT, description="Most hits to return.")
    all_owners: bool = Field(
        default=False, description="Operators only: search every person's conversations, not just your own (audited)."
    )

    @field_validator("query")
    @classmethod
    def _has_a_word(cls, value: str) -> str:
        if not _HAS_WORD.search(value):
            raise ValueError("must contain at least one letter or digit")
        return value


class NoArgs(Args):
    pass


class Participant(BaseModel):
    address: str
    first_seen: str
    last_seen: str
    message_count: int


class Conversation(BaseModel):
    id: str
    title: str | None
    created_at: str
    updated_at: str
    created_by: str | None
    message_count: int
    owner: str = "system"
    """The principal name it belongs to (``alice``), or ``system``: only they (and operators, audited) read it."""
    participants: list[Participant] | None = None


class ConversationPage(BaseModel):
    conversations: list[Conversation]
    next_cursor: str | None


class Message(BaseModel):
    id: str
    conversation_id: str | None
    sender: str
    recipient: str
    kind: str
    correlation_id: str | None
    created_at: str
    text: str
    envelope: JsonValue
    damaged: bool = False
    """The stored row fails its checksum or cannot be read: only its id is given, nothing it holds."""


class MessagePage(BaseModel):
    conversation_id: str
    direction: Literal["forward", "backward"]
    messages: list[Message]
    next_cursor: str | None


class SearchHit(BaseModel):
    id: str
    conversation_id: str | None
    sender: str
    recipient: str
    kind: str
    created_at: str
    snippet: str


class SearchResult(BaseModel):
    query: str
    fts_query: str
    hits: list[SearchHit]


class SyncResult(BaseModel):
    stored_through: str | None
    count: int


class Stats(BaseModel):
    messages: int
    conversations: int
    schema_version: int
    pending: int
    batches: int
    largest_batch: int
    skipped: int
    write_failures: int
    unstorable: int
    refused: int = 0
    """Envelopes whose write the storage refused (disk full, read-only, I/O error): not stored, never later."""


def encode_conversation_cursor(created_at: str, conversation_id: str) -> str:
    raw = json.dumps([created_at, conversation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_conversation_cursor(token: str) -> tuple[str, str]:
    """The (created_at, id) a list cursor stands for; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not a cursor returned by list_conversations") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("not a cursor returned by list_conversations")
    return value[0], value[1]


MAX_ARTIFACT_B64 = (MAX_ARTIFACT_BYTES + 2) // 3 * 4
"""Base64 length of the largest artifact."""


class AttachArtifactArgs(Args):
    conversation_id: str = ConversationId
    name: str = Field(pattern=NAME_PATTERN, description="plain file name; its extension decides the content type")
    content_b64: str = Field(max_length=MAX_ARTIFACT_B64, description="the file's bytes, base64")

    @field_validator("content_b64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.content_b64)


class ArtifactArgs(Args):
    conversation_id: str = ConversationId
    artifact_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="the artifact's id (SHA-256 of its bytes)")


class ListArtifactsArgs(Args):
    conversation_id: str = ConversationId


class ArtifactContent(BaseModel):
    """One artifact and its bytes."""

    artifact: ArtifactRef
    content_b64: str


class ArtifactList(BaseModel):
    artifacts: list[ArtifactRef]
