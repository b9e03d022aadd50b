"""Child process for the kill -9 test: a bus and Rogers, publishing until killed.

Usage: ``python _durability_child.py DATA_DIR CONVERSATION_ID``. It publishes bursts
of messages and, after each burst, asks Rogers to ``sync``; only once sync has
answered does it print the burst's ids (one per line, flushed) — those are the
acknowledged ids. While each sync is pending it publishes more, unacknowledged,
messages, so whenever the kill arrives there are writes in flight.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bus.envelope import CommandPart, Envelope, Kind, ProsePart, deadline_in
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.rogers import Rogers

BURST = 10
EXTRA = 20


def message(conversation_id: str, text: str) -> Envelope:
    return Envelope(
        sender="user.alice",
        recipient="hopper",
        kind=Kind.EVENT,
        conversation_id=conversation_id,
        content=[ProsePart(text=text)],
    )


async def main(data_dir: Path, conversation_id: str) -> None:
    bus = InMemoryBus()
    await bus.start()
    rogers = Rogers(MadContext(bus=bus, data_dir=data_dir))
    await rogers.start()
    burst_no = 0
    while True:
        burst = [message(conversation_id, f"acknowledged {burst_no}.{i}") for i in range(BURST)]
        for envelope in burst:
            await bus.publish(envelope)
        sync = asyncio.create_task(
            bus.request(
                Envelope(
                    sender="gateway",
                    recipient="rogers",
                    kind=Kind.REQUEST,
                    deadline=deadline_in(30),
                    content=[CommandPart(tool="sync")],
                )
            )
        )
        for i in range(EXTRA):
            await bus.publish(message(conversation_id, f"unacknowledged {burst_no}.{i}"))
        reply = await sync
        if reply.error is not None:
            print(f"sync failed: {reply.error.code}: {reply.error.message}", file=sys.stderr, flush=True)
            continue
        sys.stdout.write("".join(f"{e.id}\n" for e in burst))
        sys.stdout.flush()
        burst_no += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
