"""Rogers: keeps every conversation forever.

A batch wiretap (``Bus.wiretap_batches``) hands Rogers every envelope that crosses the
bus, in publication order, up to ``batch_max`` at a time; the observer writes each batch
in one transaction and returns only after the commit, so the bus acknowledges a tap
entry only once it is durable — a Rogers killed mid-batch gets it again, and storing is
idempotent by id. Group commit: while one batch fsyncs, the next gathers in the bus's
tap mailbox (``queue_max``) or, on Redis, in the tap stream. ``sync`` answers only once
the envelope that carried it — and so everything published before it — has been
committed, which is what lets the gateway acknowledge a message as durable.

Not stored: envelopes to ``stream.*`` (deltas the final reply repeats) and Rogers's
own replies (copies of rows it already holds; storing them would copy every page it
serves). Everything else — requests, replies, events, errors — is kept.

Secrets are never stored: data parts typed ``SECRET_MEDIA_TYPE`` (and the value argument
of a request to Turing's ``put``) are replaced by ``[REDACTED]`` structurally, which works
whichever process sent them, and every stored text and envelope passes through the
process's secret redactor (``MadContext.redactor``, which Turing feeds).
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import logging
import re
import sqlite3
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from bus.base import BusError, Subscription, waiting
from bus.envelope import SECRET_MEDIA_TYPE, CommandPart, DataPart, Envelope, Kind, ProsePart
from bus.ids import new_id
from mads.core import ledger, names
from mads.core.artifacts import ArtifactRef
from mads.core.base import MAD, MadContext, RemoteError, ToolFailure
from mads.core.sqlite import check_file, fault_detail, storage_fault
from mads.core.store_health import STORAGE_TOPIC, HealthTracker, StorageEvent, StorageReport
from mads.core.tools import Call, tool
from mads.rogers.artifacts import ArtifactDamaged, ArtifactStore
from mads.rogers.schemas import (
    ArtifactArgs,
    ArtifactContent,
    ArtifactList,
    AttachArtifactArgs,
    Claim,
    ClaimArgs,
    Conversation,
    ConversationPage,
    CreateConversationArgs,
    GetConversationArgs,
    HistoryArgs,
    ListArtifactsArgs,
    ListConversationsArgs,
    MessagePage,
    NoArgs,
    RogersConfig,
    SearchArgs,
    SearchResult,
    Stats,
    SyncArgs,
    SyncResult,
)
from mads.rogers.search_query import to_fts_query
from mads.rogers.store import ConversationStore, MessageRecord, StoreDamaged, timestamp

log = logging.getLogger(__name__)

_POSITIONS_KEPT = 4096
"""Requests to Rogers remembered by tap position until their handler asks (``sync``).

A handler runs at most mailbox + concurrency requests after the tap saw its envelope,
far fewer than this, so an entry is never evicted before it is needed."""
_RECENT_KEPT = 16384
"""Ids of the latest stored envelopes kept in memory, so ``sync`` needs no database read for them.

A gateway asks ``sync`` about a message and its reply just after the reply crossed the bus: at
10,000 envelopes per second this still covers the last 1.6 s. An older id is looked up in the file."""
_RETRY_FIRST, _RETRY_MAX = 0.5, 30.0
AUDIT_TIMEOUT = 10.0
LEDGER_ATTEMPTS, LEDGER_RETRY_S = 60, 0.5
"""How long a starting Rogers waits for McNamara to answer with the acknowledged ledger (30 s)."""
REDACTED = "[REDACTED]"
SECRET_ARGUMENTS: dict[tuple[str, str], frozenset[str]] = {
    (names.TURING, "put"): frozenset({"value"}),
    (names.FIEDLER, "transcribe"): frozenset({"audio_base64"}),
}
"""Command arguments never stored, by (recipient MAD, tool): a secret (the request is tapped before
Turing has seen and registered the value), or a person's voice recording (its transcript is what the
conversation keeps; the recording is personal and large)."""
STORED_ELSEWHERE = "[stored as an artifact]"
BULK_ARGUMENTS: dict[tuple[str, str], frozenset[str]] = {(names.ROGERS, "attach_artifact"): frozenset({"content_b64"})}
"""Command arguments whose bytes Rogers keeps in its artifact store: not copied into the message log."""


class Rogers(MAD[RogersConfig]):
    name = names.ROGERS
    description = (
        "Keeps every conversation forever: lists conversations, returns a conversation's full message "
        "history page by page, and searches what was said."
    )
    role_prompt = (
        "Answer questions about past conversations using your tools. Use search to find where something "
        "was said, get_conversation for who took part, and history (with next_cursor) to read messages in "
        "order. Quote what the records say; never invent messages."
    )
    config_model = RogersConfig

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        self.store = ConversationStore(self.data_dir / self.config.db_filename)
        self.artifacts = ArtifactStore(self.data_dir)
        self._skip = re.compile("|".join(fnmatch.translate(p) for p in self.config.skip_recipients) or r"(?!)")
        self._tap: Subscription | None = None
        self._observed = 0
        """Stored envelopes seen by the tap so far: the tap position of the latest one."""
        self._committed = 0
        self._committed_id: str | None = None
        self._count = 0
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._recent: OrderedDict[str, None] = OrderedDict()
        """Ids of the latest committed envelopes (at most ``_RECENT_KEPT``): stored, no need to ask the file."""
        self._position_waiters: dict[str, asyncio.Future[int]] = {}
        self._progress = asyncio.Condition()
        self._failures = 0
        self._last_failure: str | None = None
        self._batches = 0
        self._largest_batch = 0
        self._skipped = 0
        self._unstorable = 0
        self.ledger_checked = False
        """True once the acknowledged ledger was compared with the file after this start."""
        self.health = HealthTracker(
            f"{self.name}/{self.config.db_filename}", self.store.path, low_space_bytes=self.config.low_space_bytes
        )
        self._refused = 0
        self._refused_in_outage = 0
        self._prober: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._damaged_ids: set[str] = set()
        self._ledger: dict[str, tuple[int, str, int]] = {}
        """Per conversation: messages stored, running hash, last seq folded in (see mads.core.ledger)."""
        self._ledger_lock = asyncio.Lock()
        self._ledger_requests: set[str] = set()

    # ---- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.store.open()
        await self.artifacts.open()
        try:
            self._count = await self.store.message_count()
        except sqlite3.DatabaseError as exc:
            self._found_damage([], f"the message count cannot be read ({exc})")
        self._spawn(self._quick_check())
        self._spawn(self._check_ledger())
        self._tap = await self.bus.wiretap_batches(
            self._observe, batch=self.config.batch_max, mailbox=self.config.queue_max, group=self.name
        )

    async def on_stop(self) -> None:
        """Stop tapping (the batch being written finishes), close the database.

        In memory, envelopes still in the bus's tap mailbox are lost if the bus is still
        running: close the bus first (it drains the tap) to keep everything. On Redis
        they stay in the tap stream, unacknowledged, for the next Rogers of the group.
        """
        if self._tap is not None:
            await self._tap.cancel()
            self._tap = None
        for task in [self._prober, *self._background]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._prober, *self._background] if t is not None], return_exceptions=True)
        self._prober = None
        await self.store.close()
        await self.artifacts.close()

    # ---- the write path ----------------------------------------------------------------

    async def _observe(self, envelopes: list[Envelope]) -> None:
        """The wiretap observer: store the batch and return only once it is committed.

        The bus acknowledges the batch when this returns, so returning earlier (say, once
        queued) would let a killed process lose envelopes the bus counts as delivered.
        """
        batch: list[tuple[int, Envelope]] = []
        for envelope in envelopes:
            if self._stored(envelope):
                self._observed += 1
                batch.append((self._observed, envelope))
            else:
                self._skipped += 1
            if envelope.kind is Kind.REQUEST and envelope.recipient == self.address:
                self._note_position(envelope.id)
        if batch:
            await self._commit(batch)

    def _note_position(self, envelope_id: str) -> None:
        """Remember (or hand to a waiting ``sync``) the tap position of a request to Rogers."""
        waiter = self._position_waiters.pop(envelope_id, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(self._observed)
        else:
            self._positions[envelope_id] = self._observed
            if len(self._positions) > _POSITIONS_KEPT:
                self._positions.popitem(last=False)

    def _stored(self, envelope: Envelope) -> bool:
        if self._skip.match(envelope.recipient) or self._ledger_traffic(envelope):
            return False
        return not (
            envelope.sender == self.address and envelope.kind is Kind.REPLY and not self.config.store_own_replies
        )

    def _scrub(self, text: str) -> str:
        """The one place stored text passes through (envelope JSON and search text): known secrets removed."""
        return self.redactor.redact(text)

    def _envelope_json(self, envelope: Envelope) -> str:
        """The envelope as stored: secret parts stripped, then every string scrubbed.

        Scrubbing the JSON text is enough when it finds nothing (the common case, and
        fast); when it does, the strings are scrubbed one by one so the JSON stays valid
        whatever the secret contains.
        """
        envelope = _without_secret_parts(envelope)
        text = envelope.model_dump_json(exclude_none=True)
        if self._scrub(text) == text:
            return text
        value = self.redactor.redact_structure(envelope.model_dump(mode="json", exclude_none=True))
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def _record(self, envelope: Envelope) -> MessageRecord:
        text = envelope.text()
        error = envelope.error
        if error is not None:
            text = f"{text}\n{error.message}" if text else error.message
        return MessageRecord(
            id=envelope.id,
            conversation_id=envelope.conversation_id,
            sender=envelope.sender,
            recipient=envelope.recipient,
            kind=envelope.kind.value,
            correlation_id=envelope.correlation_id,
            created_at=timestamp(envelope.created_at),
            text=self._scrub(text),
            envelope_json=self._envelope_json(envelope),
        )

    def _records(self, batch: list[tuple[int, Envelope]]) -> list[MessageRecord]:
        """Encode a batch (in the store's thread: JSON and checksums for hundreds of envelopes are real CPU work).

        An envelope that cannot be encoded is logged and counted, not retried: retrying
        a deterministic failure would stop every later message from being stored.
        """
        records = []
        for _, envelope in batch:
            try:
                records.append(self._record(envelope))
            except Exception as exc:
                self._unstorable += 1
                log.error("rogers cannot encode envelope %s: %s", envelope.id, type(exc).__name__)
        return records

    async def _commit(self, batch: list[tuple[int, Envelope]]) -> None:
        """Write one batch, retrying until it is stored: a tapped envelope is never dropped."""
        encoded: list[MessageRecord] | None = None

        def encode() -> list[MessageRecord]:
            # Runs in the store's appending thread, just before the insert (encoded once, however many attempts).
            nonlocal encoded
            if encoded is None:
                encoded = self._records(batch)
            return encoded

        delay = _RETRY_FIRST
        before = self._count
        while True:
            try:
                records, self._count = await self.store.encode_and_append(encode)
                break
            except Exception as exc:
                fault = storage_fault(exc)
                if fault is not None:
                    await self._refuse(batch, fault, exc)
                    return
                self._failures += 1
                self._last_failure = f"{type(exc).__name__}: {exc}"
                log.error("rogers could not store %d envelopes (retrying in %.1fs): %s", len(batch), delay, exc)
                async with self._progress:
                    self._progress.notify_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
        self._last_failure = None
        if not self.health.health.writable:
            self._writing_again()
        touched: dict[str, list[tuple[int, str]]] = {}
        for seq, r in enumerate(records, start=before + 1):
            if r.conversation_id is not None:
                touched.setdefault(r.conversation_id, []).append((seq, r.checksum))
        if touched:
            # Every record inserted (none was stored already): their seqs follow the count, in order, so the
            # ledger folds them as they are; otherwise it reads the conversations' new rows from the file.
            exact = self._count - before == len(records)
            self._spawn(self._advance_ledger(touched if exact else dict.fromkeys(touched)))
        recent = self._recent
        for record in records:
            recent[record.id] = None
        while len(recent) > _RECENT_KEPT:
            recent.popitem(last=False)
        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(batch))
        self._committed = batch[-1][0]
        self._committed_id = batch[-1][1].id
        async with self._progress:
            self._progress.notify_all()

    # ---- storage faults ----------------------------------------------------------------

    async def _refuse(self, batch: list[tuple[int, Envelope]], fault: str, exc: BaseException) -> None:
        """The storage refused the batch (disk full, read-only, I/O error): it is not stored, now or later.

        Retrying would store these messages behind their senders' backs once space is freed, after
        they were told their message failed; so the batch is dropped, counted, and ``sync`` fails at
        once for every message in it (the gateway answers ``storage_unavailable``). The count is
        published when writing resumes, so the audit trail records the gap.
        """
        self._refused += len(batch)
        self._refused_in_outage += len(batch)
        self.health.health.refused += len(batch)
        error = f"{fault}: {fault_detail(exc)}"
        self._storage_failed(error)
        log.error("rogers refused %d envelopes: %s cannot be written (%s)", len(batch), self.store.path, error)
        self._committed = batch[-1][0]
        async with self._progress:
            self._progress.notify_all()

    def _storage_failed(self, error: str) -> None:
        """Mark the store unwritable; on the change, announce it and probe until it writes again."""
        if self.health.failed(error):
            event = self.health.event(f"{self.store.path} cannot be written: {error}")
            self._spawn(self._emit_storage(event))
            self._prober = asyncio.create_task(self._probe_until_writable())

    def _writing_again(self) -> None:
        if self.health.recovered():
            refused, self._refused_in_outage = self._refused_in_outage, 0
            event = self.health.event(
                f"{self.store.path} is writable again; {refused} messages were refused while it was not",
                refused=refused,
            )
            self._spawn(self._emit_storage(event))

    async def _probe_until_writable(self) -> None:
        """One tiny write every ``probe_interval_s`` until one commits (or a batch does)."""
        while not self.health.health.writable:
            await asyncio.sleep(self.config.probe_interval_s)
            if self.health.health.writable:
                break
            try:
                await self.store.probe()
            except Exception as exc:
                self.health.health.last_error = f"{storage_fault(exc) or type(exc).__name__}: {exc}"
                continue
            self._writing_again()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _emit_storage(self, event: StorageEvent) -> None:
        """Tell the gateway and McNamara (a separate task: the tap must never wait on its own bus)."""
        try:
            await self.emit(STORAGE_TOPIC, event.model_dump(mode="json"))
        except Exception as exc:
            log.error("rogers could not announce its storage state %s: %s", event.state, exc)

    def _found_damage(self, ids: list[str], what: str) -> None:
        """Damaged rows (or a damaged file) found: counted, logged and announced once per row, naming the file."""
        new = [i for i in ids if i not in self._damaged_ids]
        if ids and not new:
            return
        self._damaged_ids.update(new)
        self.health.health.damaged += len(new)
        self.health.health.state = "damaged"
        self.health.health.last_error = f"damaged: {what}"
        self.health.health.last_error_at = datetime.now(UTC)
        log.error("rogers found damage in %s: %s (%s)", self.store.path, what, ", ".join(new[:20]))
        event = self.health.event(f"{self.store.path} is damaged: {what}", messages=new[:100])
        self._spawn(self._emit_storage(event))

    async def _quick_check(self) -> None:
        """SQLite's quick_check of the whole file (in the background: start-up does not wait for it)."""
        # Its own read-only connection, in a thread: reads on the store's reader go on meanwhile.
        problems = await asyncio.to_thread(check_file, self.store.path, quick=True)
        if problems:
            self._found_damage([], f"quick_check: {'; '.join(problems[:5])}")

    # ---- the acknowledged ledger (loss detection) -------------------------------------------

    async def _fold(self, conversation_id: str, committed: list[tuple[int, str]] | None) -> tuple[int, str, int]:
        """Fold the conversation's rows stored since its entry into it: ``committed`` (seq, checksum) when
        the batch's rows are known exactly and the entry exists, else read from the file.

        Folds run in commit order, so an entry holds every row of its conversation before the batch:
        of ``committed`` only rows past the entry count (a read from the file may have gone further)."""
        entry = self._ledger.get(conversation_id)
        count, running, last = entry or (0, ledger.GENESIS, 0)
        if entry is None or committed is None:
            rows = await self.store.conversation_tail(conversation_id, last)
        else:
            rows = [(seq, checksum) for seq, checksum in committed if seq > last]
        for seq, checksum in rows:
            count, running, last = count + 1, ledger.advance(running, checksum), seq
        self._ledger[conversation_id] = (count, running, last)
        return count, running, last

    async def _advance_ledger(self, touched: dict[str, list[tuple[int, str]] | None]) -> None:
        """Fold the batch into each touched conversation's count and hash; publish them for the audit trail."""
        async with self._ledger_lock:
            entries: dict[str, ledger.Entry] = {}
            for conversation_id in sorted(touched):
                try:
                    count, running, _ = await self._fold(conversation_id, touched[conversation_id])
                except Exception as exc:
                    # Forget the entry: the next fold reads the whole conversation again, missing nothing.
                    self._ledger.pop(conversation_id, None)
                    log.error("rogers could not fold conversation %s into its ledger: %s", conversation_id, exc)
                    continue
                entries[conversation_id] = ledger.Entry(count=count, hash=running)
            items = list(entries.items())
            for start in range(0, len(items), ledger.CHUNK):
                chunk = dict(items[start : start + ledger.CHUNK])
                try:
                    await self.emit(
                        ledger.LEDGER_TOPIC, ledger.LedgerEvent(conversations=chunk).model_dump(mode="json")
                    )
                except Exception as exc:
                    log.error("rogers could not publish its ledger: %s", exc)

    def _ledger_traffic(self, envelope: Envelope) -> bool:
        """Rogers asking McNamara for the ledger (retried until McNamara runs), and the answers: bookkeeping,
        not stored (it would add envelopes to the store at every start, and many without McNamara)."""
        if envelope.correlation_id is not None and envelope.correlation_id in self._ledger_requests:
            self._ledger_requests.discard(envelope.correlation_id)
            return True
        if (
            envelope.sender == self.address
            and envelope.kind is Kind.REQUEST
            and envelope.recipient.split(".", 1)[0] == names.MCNAMARA
            and any(isinstance(p, CommandPart) and p.tool == "ledger" for p in envelope.content)
        ):
            self._ledger_requests.add(envelope.id)
            return True
        return False

    async def _check_ledger(self) -> None:
        """After a start: compare what McNamara's trail says was acknowledged with what the file holds."""
        recorded = None
        for _ in range(LEDGER_ATTEMPTS):
            try:
                recorded = ledger.Ledger.model_validate(
                    await self.call(names.MCNAMARA, "ledger", {}, timeout=AUDIT_TIMEOUT)
                )
                break
            except (RemoteError, BusError, ValueError):
                await asyncio.sleep(LEDGER_RETRY_S)
        if recorded is None:
            log.warning(
                "rogers could not read the acknowledged ledger from McNamara: loss after a crash goes unchecked"
            )
            return
        missing: dict[str, int] = {}
        changed: list[str] = []
        async with self._ledger_lock:
            for conversation_id, entry in recorded.conversations.items():
                count, running = 0, ledger.GENESIS
                for _, checksum in await self.store.conversation_tail(conversation_id, 0):
                    if count == entry.count:
                        break
                    count, running = count + 1, ledger.advance(running, checksum)
                if count < entry.count:
                    missing[conversation_id] = entry.count - count
                elif running != entry.hash:
                    changed.append(conversation_id)
        self.ledger_checked = True
        if missing or changed:
            self._found_loss(missing, changed)

    def _found_loss(self, missing: dict[str, int], changed: list[str]) -> None:
        total = sum(missing.values())
        what = f"{total} acknowledged messages are missing in {len(missing)} conversations" + (
            f"; {len(changed)} conversations differ from what was acknowledged" if changed else ""
        )
        self.health.health.state = "lost"
        self.health.health.last_error = f"lost: {what}"
        self.health.health.last_error_at = datetime.now(UTC)
        log.error("rogers: %s is missing data: %s (%s)", self.store.path, what, ", ".join(sorted(missing)[:20]))
        details: dict[str, int | str | list[str]] = {
            "missing": total,
            "conversations": [f"{cid}: {n} missing" for cid, n in sorted(missing.items())][:50],
        }
        if changed:
            details["changed"] = sorted(changed)[:50]
        self._spawn(self._emit_storage(self.health.event(f"{self.store.path} lost data: {what}", **details)))

    def _unavailable(self) -> ToolFailure:
        health = self.health.health
        return ToolFailure(
            "storage_unavailable",
            f"rogers cannot store messages now ({health.last_error or 'the store refused a write'}); "
            "nothing was stored, try again later",
            retryable=True,
        )

    def _write_failed(self, exc: BaseException) -> ToolFailure | None:
        """A tool's write hit a storage fault: mark the store and answer storage_unavailable."""
        fault = storage_fault(exc)
        if fault is None:
            return None
        self._storage_failed(f"{fault}: {fault_detail(exc)}")
        return self._unavailable()

    async def _position_of(self, envelope_id: str) -> int:
        """The tap position of a request to Rogers, waiting for the tap to see it if need be."""
        position = self._positions.pop(envelope_id, None)
        if position is not None:
            return position
        waiter = asyncio.get_running_loop().create_future()
        self._position_waiters[envelope_id] = waiter
        try:
            return await waiter
        finally:
            self._position_waiters.pop(envelope_id, None)

    async def _committed_through(self, position: int) -> None:
        failures = self._failures
        async with self._progress:
            await self._progress.wait_for(lambda: self._committed >= position or self._failures > failures)
        if self._committed < position:
            raise ToolFailure(
                "storage_unavailable",
                f"messages are not yet durable: {self._last_failure or 'the database refused a write'}",
                retryable=True,
            )

    # ---- tools -------------------------------------------------------------------------

    @tool(
        "Wait until every message that crossed the bus before this call is durably stored, then return "
        "stored_through (id of the last stored message) and count (messages stored in total)."
    )
    async def sync(self, args: SyncArgs, call: Call) -> SyncResult:
        remaining = call.envelope.remaining()
        try:
            # Waiting for a commit is I/O: the handler's slot serves other requests (get_conversation,
            # more syncs) meanwhile, so a burst of syncs never queues them behind the fsync.
            with waiting():
                async with asyncio.timeout(remaining):
                    await self._committed_through(await self._position_of(call.envelope.id))
        except TimeoutError:
            raise ToolFailure(
                "timeout", "messages were not stored before the request's deadline", retryable=True
            ) from None
        if args.message_ids:
            # Ids committed lately are known without a read; only older (or never stored) ones ask the file.
            unknown = [i for i in args.message_ids if i not in self._recent]
            if unknown and set(unknown) - await self.store.stored_ids(unknown):
                raise self._unavailable()
        elif not self.health.health.writable:
            raise self._unavailable()
        return SyncResult(stored_through=self._committed_id, count=self._count)

    @tool("Start a new conversation and return it (its id is what messages carry as conversation_id).")
    async def create_conversation(self, args: CreateConversationArgs, call: Call) -> Conversation:
        title = self._scrub(args.title) if args.title else args.title
        try:
            created = await self.store.create_conversation(
                new_id(), title, args.created_by or call.sender, owner=call.principal.name
            )
        except Exception as exc:
            failure = self._write_failed(exc)
            if failure is None:
                raise
            raise failure from None
        if not self.health.health.writable:
            self._writing_again()
        return created

    @tool(
        "List your conversations, newest first, one page at a time (pass next_cursor back to get the next page). "
        "Operators may ask for every person's with all_owners (audited)."
    )
    async def list_conversations(self, args: ListConversationsArgs, call: Call) -> ConversationPage:
        owner = await self._owner_scope(call, args.all_owners, "list_conversations")
        return await self.store.list_conversations(args.cursor, min(args.limit, self.config.page_max), owner)

    @tool("Get one conversation: title, times, message count and participants (who sent or received messages).")
    async def get_conversation(self, args: GetConversationArgs, call: Call) -> Conversation:
        # Before a write only the owner matters (the gateway's check): participants are not read.
        conversation = await self.store.get_conversation(args.conversation_id, participants=not args.for_writing)
        await self._may_read(call, conversation, args.conversation_id, "get_conversation")
        assert conversation is not None
        if args.for_writing and not self.health.health.writable:
            raise self._unavailable()
        return conversation

    @tool(
        "Read a conversation's messages in order: direction forward (oldest first) or backward (newest first). "
        "Pass next_cursor back as cursor for the next page; next_cursor is null on the last page."
    )
    async def history(self, args: HistoryArgs, call: Call) -> MessagePage:
        conversation = await self.store.get_conversation(args.conversation_id, participants=False)
        await self._may_read(call, conversation, args.conversation_id, "history")
        limit = min(args.limit, self.config.page_max)
        try:
            page = await self.store.history(args.conversation_id, args.cursor, limit, args.direction)
        except StoreDamaged as exc:
            self._found_damage([], exc.what)
            raise ToolFailure(
                "storage_damaged",
                f"{self.health.health.store} is damaged where this conversation is stored; an operator was alerted",
            ) from None
        damaged = [m.id for m in page.messages if m.damaged]
        if damaged:
            self._found_damage(damaged, f"{len(damaged)} messages fail their checksum or cannot be read")
        return page

    @tool(
        "Full-text search over what was said in your conversations (all words must match; best matches first), "
        "optionally within one conversation. Each hit has the message id, its conversation and a snippet with "
        "matches in [brackets]. Operators may search every person's with all_owners (audited)."
    )
    async def search(self, args: SearchArgs, call: Call) -> SearchResult:
        if args.conversation_id is not None:
            conversation = await self.store.get_conversation(args.conversation_id, participants=False)
            await self._may_read(call, conversation, args.conversation_id, "search")
            owner = None
        else:
            owner = await self._owner_scope(call, args.all_owners, "search")
        fts_query = to_fts_query(args.query)
        hits = await self.store.search(fts_query, args.conversation_id, min(args.limit, self.config.page_max), owner)
        return SearchResult(query=args.query, fts_query=fts_query, hits=hits)

    # ---- who may read what ---------------------------------------------------------------

    async def _may_read(self, call: Call, conversation: Conversation | None, conversation_id: str, action: str) -> None:
        """The owner and the system read a conversation; an operator reads anyone's, audited; anyone else
        gets ``not_found`` exactly as for a conversation that does not exist (no existence leak)."""
        principal = call.principal
        if conversation is None:
            raise _not_found(conversation_id)
        if not principal.is_person or conversation.owner == principal.name:
            return
        if principal.is_operator:
            await self._audit_read(call, action, {"conversation_id": conversation_id, "owner": conversation.owner})
            return
        raise _not_found(conversation_id)

    async def _owner_scope(self, call: Call, all_owners: bool, action: str) -> str | None:
        """Whose conversations a list or search covers: the caller's own, or (operators, audited) everyone's."""
        principal = call.principal
        if not principal.is_person:
            return None
        if not all_owners:
            return principal.name
        if not principal.is_operator:
            raise ToolFailure("forbidden", f"all_owners is for operators; {principal} is not one")
        await self._audit_read(call, action, {"all_owners": True})
        return None

    async def _audit_read(self, call: Call, action: str, details: dict[str, JsonValue]) -> None:
        """An operator reading other people's conversations is recorded before the read (fail closed)."""
        record: dict[str, JsonValue] = {
            "event_type": "data.read",
            "actor": str(call.principal),
            "action": f"rogers.{action}",
            "outcome": "success",
            "details": {**details, "chain": list(call.envelope.chain), "via_llm": call.via_llm},
            "hmac_keys": [],
        }
        try:
            await self.call(names.MCNAMARA, "record", record, timeout=AUDIT_TIMEOUT)
        except (RemoteError, BusError) as exc:
            raise ToolFailure(
                "audit_unavailable",
                f"reading another person's conversations must be audited, and the audit trail cannot record: {exc}",
                retryable=True,
            ) from None

    # ---- artifacts ------------------------------------------------------------------------

    @tool(
        "Attach a file (base64) to a conversation the work's person owns; returns its reference.",
        internal=True,
    )
    async def attach_artifact(self, args: AttachArtifactArgs, call: Call) -> ArtifactRef:
        conversation = await self.store.get_conversation(args.conversation_id, participants=False)
        principal = call.principal
        if conversation is None or (principal.is_person and conversation.owner != principal.name):
            raise _not_found(args.conversation_id)
        return await self.artifacts.put(args.conversation_id, args.name, args.content(), str(principal))

    @tool("The files attached to one conversation (charts, spreadsheets, reports): names, types, sizes.")
    async def list_artifacts(self, args: ListArtifactsArgs, call: Call) -> ArtifactList:
        conversation = await self.store.get_conversation(args.conversation_id, participants=False)
        await self._may_read(call, conversation, args.conversation_id, "list_artifacts")
        return ArtifactList(artifacts=await self.artifacts.list(args.conversation_id))

    @tool("One file attached to a conversation, with its bytes (base64).", llm=False)
    async def read_artifact(self, args: ArtifactArgs, call: Call) -> ArtifactContent:
        conversation = await self.store.get_conversation(args.conversation_id, participants=False)
        await self._may_read(call, conversation, args.conversation_id, "read_artifact")
        ref = await self.artifacts.get(args.conversation_id, args.artifact_id)
        if ref is None:
            raise ToolFailure("not_found", f"no artifact {args.artifact_id} in conversation {args.conversation_id!r}")
        try:
            content = await self.artifacts.read(ref)
        except ArtifactDamaged as exc:
            log.error("rogers: %s (conversation %s)", exc, args.conversation_id)
            raise ToolFailure("artifact_damaged", str(exc)) from None
        return ArtifactContent(artifact=ref, content_b64=base64.b64encode(content).decode())

    @tool(
        "Claim an Idempotency-Key for a message about to be sent: new (send it as message_id), done (the stored "
        "reply) or pending (stored, not yet answered).",
        internal=True,
    )
    async def claim_idempotency_key(self, args: ClaimArgs, call: Call) -> Claim:
        owner = call.principal.name
        try:
            conversation_id, message_id = await self.store.claim_key(
                owner, args.key, args.conversation_id, args.message_id
            )
            if message_id == args.message_id:
                return Claim(status="new", message_id=message_id)
            if conversation_id != args.conversation_id:
                raise ToolFailure("idempotency_conflict", "this Idempotency-Key was used for another conversation")
            if not await self.store.has_message(message_id):
                # Refused earlier (never stored): this attempt takes the key over.
                await self.store.reassign_key(owner, args.key, args.message_id)
                return Claim(status="new", message_id=args.message_id)
            reply = await self.store.reply_to(message_id)
        except StoreDamaged as exc:
            self._found_damage([], exc.what)
            raise ToolFailure(
                "storage_damaged", f"{self.health.health.store} is damaged; an operator was alerted"
            ) from None
        except ToolFailure:
            raise
        except Exception as exc:
            failure = self._write_failed(exc)
            if failure is None:
                raise
            raise failure from None
        if reply is None:
            return Claim(status="pending", message_id=message_id)
        kind, envelope = reply
        if kind == "error":
            await self.store.reassign_key(owner, args.key, args.message_id)
            return Claim(status="new", message_id=args.message_id)
        return Claim(status="done", message_id=message_id, reply=json.loads(envelope))

    @tool("The store's state: writable, free space, last write error, messages refused.", internal=True)
    async def storage(self, args: NoArgs) -> StorageReport:
        return StorageReport(stores=[await asyncio.to_thread(self.health.refresh)])

    @tool("Counts: messages and conversations stored, writes pending and batches committed.")
    async def stats(self, args: NoArgs) -> Stats:
        return Stats(
            messages=self._count,
            conversations=await self.store.conversation_count(),
            schema_version=self.store.schema_version,
            pending=self._observed - self._committed,
            batches=self._batches,
            largest_batch=self._largest_batch,
            skipped=self._skipped,
            write_failures=self._failures,
            unstorable=self._unstorable,
            refused=self._refused,
        )


def _without_secret_parts(envelope: Envelope) -> Envelope:
    """``envelope`` with every secret value replaced by ``[REDACTED]`` (itself when it carries none)."""
    target = envelope.recipient.split(".", 1)[0]
    parts = envelope.content
    if not any(
        (isinstance(p, DataPart) and p.media_type == SECRET_MEDIA_TYPE)
        or (isinstance(p, CommandPart) and ((target, p.tool) in SECRET_ARGUMENTS or (target, p.tool) in BULK_ARGUMENTS))
        for p in parts
    ):
        return envelope
    cleaned: list[CommandPart | DataPart | ProsePart] = []
    for part in parts:
        if isinstance(part, DataPart) and part.media_type == SECRET_MEDIA_TYPE:
            part = part.model_copy(update={"value": REDACTED})
        elif isinstance(part, CommandPart) and (target, part.tool) in SECRET_ARGUMENTS:
            hidden = SECRET_ARGUMENTS[(target, part.tool)]
            arguments = {k: REDACTED if k in hidden else v for k, v in part.arguments.items()}
            part = part.model_copy(update={"arguments": arguments})
        elif isinstance(part, CommandPart) and (target, part.tool) in BULK_ARGUMENTS:
            elided = BULK_ARGUMENTS[(target, part.tool)]
            arguments = {k: STORED_ELSEWHERE if k in elided else v for k, v in part.arguments.items()}
            part = part.model_copy(update={"arguments": arguments})
        cleaned.append(part)
    return envelope.model_copy(update={"content": cleaned})


def _not_found(conversation_id: str) -> ToolFailure:
    return ToolFailure("not_found", f"no conversation {conversation_id!r}")
