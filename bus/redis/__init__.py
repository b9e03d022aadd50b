"""The Redis Streams transport (``RedisBus``): same interface and delivery rules as the in-memory bus."""

from bus.redis.bus import BusBackpressure, BusUnavailable, RedisBus, TransportStats
from bus.redis.dead_letters import DeadLetter
from bus.redis.settings import RedisBusSettings

__all__ = ["BusBackpressure", "BusUnavailable", "DeadLetter", "RedisBus", "RedisBusSettings", "TransportStats"]
