"""A child process whose handler kills its own process (SIGKILL): the poison request of a real crash.

``python -m tests.deployment.crashing_worker BUS_URL ADDRESS`` subscribes ``ADDRESS`` on the Redis
bus, prints ``ready``, and dies with SIGKILL on the first request it handles.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from bus.envelope import Envelope
from bus.redis import RedisBus
from bus.redis.settings import split_url


async def main(url: str, address: str) -> None:
    connection, settings = split_url(url)
    bus = RedisBus(connection, **settings)
    await bus.start()

    async def dies(envelope: Envelope) -> None:
        print(f"handling {envelope.id}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    await bus.subscribe(address, dies)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
