"""The gateway's side of the bus: requests on behalf of a person, MAD errors mapped to HTTP.

Everything the API does goes through here, so the rules live in one place: the sender
is ``user.<name>`` and the principal is the authenticated person (name and role), set
here from the session and nowhere else; a person's message starts a *turn* (its id
travels with all the work it causes); every request has a deadline; a timeout is 504,
a MAD that is not running, a full queue (backpressure) or an unreachable bus is 503, an
unknown conversation is 404 and any other MAD failure is 502, always with the MAD's own
code, message and ``retryable`` flag.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from pydantic import JsonValue, ValidationError

from bus.base import Bus, BusBackpressure, BusClosed, BusUnavailable, DeadlineExceeded, Subscription
from bus.envelope import (
    ERROR_MEDIA_TYPE,
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    Kind,
    Part,
    Principal,
    ProsePart,
    deadline_in,
    parse_envelope,
)
from bus.ids import new_id
from bus.topics import PARTICIPANTS_MEDIA_TYPE
from gateway.drain import Drain
from gateway.errors import ApiError
from gateway.principal import user_address
from gateway.schemas import MessageResult, ReplyBody
from mads.core import names
from mads.core.artifacts import ARTIFACT_MEDIA_TYPE, artifact_refs
from mads.core.store_health import STORAGE_TOPIC, StorageEvent

log = logging.getLogger(__name__)

GRACE = names.GRACE
ROGERS = names.ROGERS
CALL_TIMEOUT = 30.0

_STATUS_BY_CODE = {
    "no_route": 503,
    "not_found": 404,
    "unknown_conversation": 404,
    "conversation_not_found": 404,
    "invalid_arguments": 422,
    "invalid_message": 422,
    "forbidden": 403,
    "access_denied": 403,
    "budget_exceeded": 429,
    "cancelled": 409,
    "storage_unavailable": 503,
    "idempotency_conflict": 409,
}
GATEWAY_SENDER = "gateway"
"""The gateway's own address, for its internal requests (an idempotency key claim), made for a person."""
STORAGE_RETRY_AFTER_S = 30
"""What ``Retry-After`` tells a client refused because a store cannot write (disk full, I/O error)."""
OWNERS_KEPT = 4096
"""Conversations whose owner the gateway remembers (the most recently written in)."""


def upstream_error(mad: str, error: ErrorInfo) -> ApiError:
    """A MAD's error reply as an HTTP error carrying the MAD's code, message, fields and retryable flag.

    ``storage_unavailable`` (a store cannot write: nothing was stored) is 503 with ``Retry-After``.
    """
    status = _STATUS_BY_CODE.get(error.code, 502)
    headers = {"Retry-After": str(STORAGE_RETRY_AFTER_S)} if error.code == "storage_unavailable" else None
    return ApiError(status, error.code, f"{mad}: {error.message}", error.fields, headers, retryable=error.retryable)


class MadClient:
    """Sends requests to MADs for one gateway; aborts them when the gateway drains."""

    def __init__(self, bus: Bus, drain: Drain, reply_timeout: float) -> None:
        self.bus = bus
        self.drain = drain
        self.reply_timeout = reply_timeout
        self._keys_in_flight: set[tuple[str, str]] = set()
        """(person, Idempotency-Key) of messages being answered: a concurrent retry gets 409."""
        self._turns: dict[tuple[str, str], set[str]] = {}
        """Turns in flight by (person, conversation): the request ids :meth:`cancel` stops."""
        self._owners: OrderedDict[str, str] = OrderedDict()
        """Conversation id → its owner, as Rogers answered before a write (an owner never changes)."""
        self._storing = False
        """Rogers's last word is that it can store messages: a successful ``for_writing`` check, not
        followed by any ``storage_unavailable`` (an answer to this gateway, or announced on ``events.storage``)."""
        self._refusals = 0
        """How many times Rogers was found unable to store (orders a check against a refusal during it)."""
        self._storage_events: Subscription | None = None

    @property
    def storing(self) -> bool:
        """Whether Rogers's last word is that it can store messages: an owner's next message skips asking it."""
        return self._storing

    async def follow_storage(self) -> None:
        """Listen to ``events.storage``: Rogers announcing it cannot store makes the next message ask it again."""
        self._storage_events = await self.bus.subscribe(
            STORAGE_TOPIC, self._on_storage_event, group=f"gateway-storage:{id(self)}"
        )

    async def stop(self) -> None:
        if self._storage_events is not None:
            await self._storage_events.cancel()
            self._storage_events = None

    async def _on_storage_event(self, envelope: Envelope) -> None:
        if envelope.sender.split(".", 1)[0] != ROGERS:
            return
        for value in envelope.data():
            try:
                event = StorageEvent.model_validate(value)
            except ValidationError as exc:
                log.warning("ignoring a malformed storage event (%d errors)", exc.error_count())
                continue
            if event.state == "unwritable":
                self._storage_refused()

    def _storage_refused(self) -> None:
        self._storing = False
        self._refusals += 1

    def cancel(self, conversation_id: str, *, principal: Principal) -> int:
        """Cancel ``principal``'s turns in flight in the conversation: all work they started stops."""
        ids = self._turns.get((principal.name, conversation_id), set())
        for turn in list(ids):
            self.bus.cancel(turn)
        return len(ids)

    def envelope(
        self,
        recipient: str,
        *parts: Part,
        principal: Principal,
        conversation_id: str | None,
        timeout: float,
        starts_turn: bool = False,
        sender: str | None = None,
        envelope_id: str | None = None,
    ) -> Envelope:
        """A request for ``principal``; ``starts_turn`` makes it the first of a turn (a person's message).

        ``sender`` is the person's address unless the gateway asks on its own behalf (internal tools);
        ``envelope_id`` chooses the request's id (else a new one).
        """
        envelope_id = envelope_id or new_id()
        return Envelope(
            id=envelope_id,
            sender=sender or user_address(principal),
            recipient=recipient,
            kind=Kind.REQUEST,
            conversation_id=conversation_id,
            deadline=deadline_in(timeout),
            principal=principal,
            turn=envelope_id if starts_turn else None,
            content=list(parts),
        )

    async def send(self, envelope: Envelope) -> Envelope:
        """Publish a request and wait for its reply; gives up with 503 when the gateway drains.

        If the waiting is cancelled (the client went away), the request is cancelled on the bus,
        so the work it started stops too.
        """
        if not self.bus.has_room(envelope.recipient):
            # Backpressure made visible: a full mailbox answers at once instead of queueing the person behind it.
            raise ApiError(
                503, "backpressure", f"{envelope.recipient} has too much queued work; try again shortly", retryable=True
            )
        try:
            return await self.drain.race(self.bus.request(envelope))
        except DeadlineExceeded:
            assert envelope.deadline is not None
            seconds = (envelope.deadline - envelope.created_at).total_seconds()
            raise ApiError(
                504, "upstream_timeout", f"{envelope.recipient} did not answer within {seconds:.3g}s", retryable=True
            ) from None
        except BusBackpressure:
            raise ApiError(
                503, "backpressure", f"{envelope.recipient} has too much queued work; try again shortly", retryable=True
            ) from None
        except BusUnavailable:
            raise ApiError(
                503, "bus_unavailable", "the message bus cannot be reached; try again shortly", retryable=True
            ) from None
        except BusClosed:
            raise ApiError(
                503, "shutting_down", "the ecosystem is shutting down; try again when it is back", retryable=True
            ) from None

    async def call(
        self,
        recipient: str,
        tool: str,
        arguments: dict[str, JsonValue] | None = None,
        *,
        principal: Principal,
        conversation_id: str | None = None,
        sender: str | None = None,
    ) -> JsonValue:
        """Run one tool of a MAD by command (no LLM); its error becomes an :class:`ApiError`."""
        command = CommandPart(tool=tool, arguments=arguments or {})
        reply = await self.send(
            self.envelope(
                recipient,
                command,
                principal=principal,
                conversation_id=conversation_id,
                timeout=CALL_TIMEOUT,
                sender=sender,
            )
        )
        if reply.error is not None:
            if reply.error.code == "storage_unavailable" and recipient == ROGERS:
                self._storage_refused()
            raise upstream_error(recipient, reply.error)
        values = reply.data()
        return values[0] if values else None

    async def conversation(self, conversation_id: str, *, principal: Principal) -> JsonValue:
        """The conversation's record from Rogers; 404 if there is none."""
        return await self.call(ROGERS, "get_conversation", {"conversation_id": conversation_id}, principal=principal)

    async def send_message(
        self,
        conversation_id: str,
        text: str,
        *,
        principal: Principal,
        idempotency_key: str | None = None,
        mad: str = GRACE,
        message_id: str | None = None,
    ) -> MessageResult:
        """Give a person's text to Grace (or ``mad``), wait for the reply, make the exchange durable, return it.

        ``message_id`` chooses the id of the person's message, which is also the turn's id (a caller that
        follows the turn's stream or usage picks it first).

        Rogers refuses at once (``storage_unavailable``) when it cannot store messages, and ``sync``
        fails unless both the message and the reply are stored: a message is acknowledged durable or
        refused, never stored later. Only the conversation's owner writes in it: another person gets
        404 from Rogers (as if it did not exist), an operator — who may read anyone's — gets 403.

        With an ``idempotency_key`` a retry never stores twice: Rogers records the key with the message
        id (in its store, so it holds across restarts); a key whose message was acknowledged answers
        the stored reply, one still being answered 409 ``in_progress``, one whose message was refused
        sends anew.
        """
        if idempotency_key is None:
            return await self._send_message(
                conversation_id, text, principal=principal, key=None, mad=mad, message_id=message_id
            )
        guard = (principal.name, idempotency_key)
        if guard in self._keys_in_flight:
            raise ApiError(
                409, "in_progress", "a message with this Idempotency-Key is still being answered", retryable=True
            )
        self._keys_in_flight.add(guard)
        try:
            return await self._send_message(
                conversation_id, text, principal=principal, key=idempotency_key, mad=mad, message_id=message_id
            )
        finally:
            self._keys_in_flight.discard(guard)

    async def _check_writable(self, conversation_id: str, principal: Principal) -> None:
        """The person may write in the conversation, and Rogers can store it (404/403/503 otherwise).

        Rogers answers (``get_conversation`` with ``for_writing``) unless both are known already: the
        conversation is this person's (Rogers said so before; an owner never changes) and Rogers's
        last word is that it can store, with no ``storage_unavailable`` since. Refusals are not
        remembered: another person, or a conversation that does not exist, always asks Rogers.
        """
        if self._storing and self._owners.get(conversation_id) == principal.name and self.bus.has_listeners(ROGERS):
            self._owners.move_to_end(conversation_id)
            return
        refusals = self._refusals
        conversation = await self.call(
            ROGERS, "get_conversation", {"conversation_id": conversation_id, "for_writing": True}, principal=principal
        )
        owner = conversation.get("owner") if isinstance(conversation, dict) else None
        if owner != principal.name:
            raise ApiError(
                403, "forbidden", "this conversation is another person's: an operator may read it, not write in it"
            )
        self._owners[conversation_id] = owner
        self._owners.move_to_end(conversation_id)
        if len(self._owners) > OWNERS_KEPT:
            self._owners.popitem(last=False)
        if self._refusals == refusals:
            self._storing = True

    async def _unless_unstored(self, sent: Envelope, principal: Principal) -> None:
        """A turn that ended in an error: if Rogers could not store the person's message, say that instead.

        The remembered owner lets a message pass before Rogers has announced a fault it met only while
        storing that very message; the person must learn it was not stored (503 ``storage_unavailable``,
        retryable), not only why the turn failed. Any other answer leaves the turn's own error to report.
        """
        try:
            await self.call(ROGERS, "sync", {"message_ids": [sent.id]}, principal=principal)
        except ApiError as exc:
            if exc.info.code == "storage_unavailable":
                raise
        except Exception:  # Rogers could not be asked: the turn's own error is what the person gets
            log.debug("sync after a failed turn could not be asked", exc_info=True)

    async def _send_message(
        self,
        conversation_id: str,
        text: str,
        *,
        principal: Principal,
        key: str | None,
        mad: str,
        message_id: str | None,
    ) -> MessageResult:
        await self._check_writable(conversation_id, principal)
        sent = self.envelope(
            mad,
            ProsePart(text=text),
            principal=principal,
            conversation_id=conversation_id,
            timeout=self.reply_timeout,
            starts_turn=True,
            envelope_id=message_id,
        )
        if key is not None:
            claim = await self.call(
                ROGERS,
                "claim_idempotency_key",
                {"key": key, "conversation_id": conversation_id, "message_id": sent.id},
                principal=principal,
                sender=GATEWAY_SENDER,
            )
            assert isinstance(claim, dict)
            if claim["status"] == "pending":
                raise ApiError(
                    409, "in_progress", "a message with this Idempotency-Key is still being answered", retryable=True
                )
            if claim["status"] == "done":
                stored = parse_envelope(claim["reply"])  # type: ignore[arg-type]
                return MessageResult(
                    conversation_id=conversation_id,
                    message_id=str(claim["message_id"]),
                    reply=reply_body(stored),
                    participants=participants(stored),
                )
        key = (principal.name, conversation_id)
        self._turns.setdefault(key, set()).add(sent.id)
        try:
            reply = await self.send(sent)
        finally:
            turns = self._turns.get(key)
            if turns is not None:
                turns.discard(sent.id)
                if not turns:
                    del self._turns[key]
        if reply.error is not None:
            await self._unless_unstored(sent, principal)
            raise upstream_error(mad, reply.error)
        await self.call(ROGERS, "sync", {"message_ids": [sent.id, reply.id]}, principal=principal)
        return MessageResult(
            conversation_id=conversation_id,
            message_id=sent.id,
            reply=reply_body(reply),
            participants=participants(reply),
        )


def reply_body(reply: Envelope) -> ReplyBody:
    """Text, plain data and any error a MAD reported inside a normal reply."""
    error: ErrorInfo | None = None
    data: list[JsonValue] = []
    for part in reply.content:
        if not isinstance(part, DataPart) or part.media_type in (PARTICIPANTS_MEDIA_TYPE, ARTIFACT_MEDIA_TYPE):
            continue
        if part.media_type == ERROR_MEDIA_TYPE and error is None:
            error = ErrorInfo.model_validate(part.value)
        else:
            data.append(part.value)
    artifacts = artifact_refs(reply.content)
    return ReplyBody(text=reply.text(), data=data, error=error, artifacts=artifacts)


def participants(reply: Envelope) -> list[str]:
    """The MADs that took part, as Grace listed them (at least the one that replied)."""
    found: list[str] = []
    for value in reply.data(PARTICIPANTS_MEDIA_TYPE):
        if isinstance(value, dict) and isinstance(value.get("participants"), list):
            found.extend(str(p) for p in value["participants"])
    sender = reply.sender.split(".", 1)[0]
    return list(dict.fromkeys([sender, *found]))
