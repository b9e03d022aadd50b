"""Cancellation across processes: ``bus.cancel(id)`` reaches the process handling the request.

A request may be handled in any process; the requester (or whoever cancels) does not know
which. A cancellation is therefore broadcast on one Redis pub/sub channel per deployment
(``<prefix>:cancel``); every process listens and cancels the handler if it is running there
(:func:`bus.base.cancel_running`). Pub/sub is fire-and-forget, which is what cancellation
needs: a process that misses it (disconnected at that moment) still ends the handler at the
request's deadline, which every envelope carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from bus.base import DeliveryRules, cancel_running
from bus.redis.backoff import TRANSIENT, Backoff

log = logging.getLogger(__name__)


class CancelChannel:
    """Publishes cancellations and applies the ones it hears to this process's running handlers."""

    def __init__(self, redis: Redis, channel: str, rules: DeliveryRules, backoff_max: float) -> None:
        self.redis = redis
        self.channel = channel
        self.rules = rules
        self.backoff_max = backoff_max
        self._sends: set[asyncio.Task[None]] = set()

    def announce(self, request_id: str) -> None:
        """Tell every process to cancel ``request_id`` (does not wait)."""
        task = asyncio.create_task(self._send(request_id), name=f"bus:cancel:{request_id}")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, request_id: str) -> None:
        with contextlib.suppress(*TRANSIENT):
            await self.redis.publish(self.channel, request_id)

    async def listen(self) -> None:
        """Run until cancelled: apply every cancellation heard, reconnecting with backoff."""
        backoff = Backoff(self.backoff_max)
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                backoff.reset()
                async for message in pubsub.listen():
                    data = message.get("data")
                    request_id = data.decode() if isinstance(data, bytes) else str(data)
                    cancel_running(self.rules, request_id)
            except TRANSIENT as exc:
                log.debug("cancellation channel lost (%s); reconnecting", type(exc).__name__)
                await backoff.wait()
            finally:
                with contextlib.suppress(*TRANSIENT):
                    await pubsub.aclose()

    async def close(self) -> None:
        for task in list(self._sends):
            with contextlib.suppress(asyncio.CancelledError, *TRANSIENT):
                await asyncio.wait_for(task, 1.0)
