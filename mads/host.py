"""The host: builds the bus, starts the selected MADs, stops them cleanly.

One process runs one host. By default it runs every MAD on the in-memory bus; with
``bus = "redis://…"`` and ``mads = [...]`` several hosts split the MADs between
processes or machines with the same code. The host is the only code that names every
MAD (through :mod:`mads.registry`); the runtime below it (:mod:`mads.core`) never
imports a MAD, and the gateway above it is composed with it by the entry point
(:mod:`mad_ecosystem.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from bus.base import Bus, Redact
from bus.envelope import DataPart, Envelope, Kind
from bus.ids import new_id
from bus.memory import InMemoryBus
from bus.topics import CONFIG_CHANGE
from mads import registry
from mads.core import config_changes, names
from mads.core.base import MAD, MadContext
from mads.core.directory import Directory, PresenceAnnouncer
from mads.core.heap import freeze_startup_heap
from mads.core.quarantine import QuarantineGate
from mads.core.redaction import REDACTOR, SecretRedactor
from mads.core.settings import ConfigError, Settings, validate_mad_section
from mads.core.telemetry import Telemetry

log = logging.getLogger(__name__)


def make_bus(url: str, *, process: str, redact: Redact | None = None, senders: frozenset[str] | None = None) -> Bus:
    """The transport named by the configuration.

    A Redis URL may carry bus settings in its query (``?prefix=prod&reclaim_idle=10``),
    so deployments sharing one Redis stay apart; a bad one is a configuration error
    naming ``ecosystem.bus`` and the setting.
    """
    if url == "memory":
        return InMemoryBus() if redact is None else InMemoryBus(redact=redact)
    from pydantic import ValidationError

    from bus.redis import RedisBus
    from bus.redis.settings import split_url

    connection, query = split_url(url)
    try:
        extra: dict[str, Any] = {"redact": redact} if redact is not None else {}
        return RedisBus(connection, senders=senders, **extra, **query)
    except ValidationError as exc:
        problems = "; ".join(
            f"ecosystem.bus: {'.'.join(str(x) for x in err['loc']) or 'query'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(problems) from None
    except ValueError as exc:
        raise ConfigError(f"ecosystem.bus: {exc}") from None


def prepare_data_dir(path: Path) -> Path:
    """The one directory holding everything persistent, private to this user."""
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class Host:
    """Owns the lifecycle of the bus, the MADs of this process and the directory.

    ``redactor`` is the process's secret redactor (default: :data:`~mads.core.redaction.REDACTOR`,
    the one the log handlers use): the bus, every MAD and whatever is composed with the host
    (the gateway) scrub through it, and Turing feeds it.
    """

    def __init__(self, settings: Settings, *, redactor: SecretRedactor = REDACTOR) -> None:
        self.settings = settings
        self.redactor = redactor
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self.names = registry.select(settings.ecosystem.mads)
        self.classes = {name: registry.load(name) for name in self.names}
        self.configs = {
            name: validate_mad_section(name, cls.config_model, settings.section(name))
            for name, cls in self.classes.items()
        }
        self.data_dir = prepare_data_dir(settings.ecosystem.data_dir)
        self.bus: Bus = make_bus(
            settings.ecosystem.bus, process=self.process, redact=redactor.redact, senders=self.senders()
        )
        self.mads: dict[str, MAD] = {}
        self.capabilities: dict[str, Any] = {}
        self._announcers: list[PresenceAnnouncer] = []
        self.directory = Directory(self.bus)
        self._quarantine: QuarantineGate | None = None
        self._freezer: asyncio.Task[None] | None = None
        self.sandbox: Any = None
        uses_sandbox = {name for name, cls in self.classes.items() if getattr(cls, "uses_sandbox", False)}
        if set(settings.sandbox.grants) & set(self.names) or uses_sandbox:
            # Imported only when needed: the sandbox pulls in wasmtime.
            from mads.core.sandbox_capability import sandbox_for_host

            self.sandbox = sandbox_for_host(
                settings.sandbox, self.names, uses_sandbox, set(registry.MADS), self.data_dir
            )
            self.capabilities["sandbox"] = self.sandbox
        self.telemetry = Telemetry(settings.telemetry, instance=self.process)

    def senders(self) -> frozenset[str]:
        """Whom this process may send as: its MADs, the host itself, the bus's own errors, its directory,
        and — where the gateway runs — the gateway and the people it serves (``user.*``)."""
        own = {*self.names, names.HOST, names.BUS, names.DIRECTORY}
        if self.serves_gateway:
            own |= {names.GATEWAY, "user"}
        return frozenset(own)

    @property
    def serves_gateway(self) -> bool:
        """The gateway runs in the process that runs Grace (she fronts the others)."""
        return names.GRACE in self.names

    def describe(self, url: str | None = None) -> str:
        """One line for the operator: which MADs run here, on which bus (no password), gateway or not."""
        bus = self.settings.ecosystem.bus
        if bus != "memory":
            from bus.redis.settings import redacted

            bus = redacted(bus)
        where = f"gateway at {url}" if url else "no gateway in this process (it runs where grace runs)"
        return f"process {self.process} runs MADs: {', '.join(self.names) or 'none'}; bus: {bus}; {where}"

    async def start(self) -> None:
        await self.bus.start()
        await self.telemetry.start(self.bus, gateway_here=self.serves_gateway)
        await self.directory.start()
        if self.sandbox is not None:
            self.sandbox.begin()  # compiles or loads in a thread while the MADs and the gateway start
        if names.MCNAMARA not in self.names:
            # McNamara runs elsewhere: enforce its quarantine decisions in this process too.
            self._quarantine = QuarantineGate()
            await self._quarantine.follow(self.bus)
        try:
            for name in self.names:
                await self._start_mad(name, self.classes[name], self.configs[name])
                log.info("started %s", name)
            await self._announce_config_changes()
        except BaseException:
            await self.stop()
            raise
        if self.settings.ecosystem.freeze_startup_heap:
            self._freezer = asyncio.create_task(self._freeze_when_ready(), name="host:freeze-startup-heap")

    async def _freeze_when_ready(self) -> None:
        """Once every MAD finished its background start-up (Fiedler loading litellm), freeze the heap."""
        await asyncio.gather(*(mad.ready() for mad in list(self.mads.values())), return_exceptions=True)
        log.debug("start-up heap frozen: %d objects", freeze_startup_heap())

    async def reload(self, name: str) -> MAD:
        """Replace one running MAD with its class freshly imported from disk; the other MADs keep running.

        The MAD stops taking requests and its in-flight work finishes (its subscription is
        cancelled), its package's modules are dropped from ``sys.modules`` and imported again,
        and the new class starts on the same address with the same configuration section. If the
        new code fails to import or start, the old modules and a new instance of the old class
        are put back, and the error is raised.
        """
        if name not in self.mads:
            raise KeyError(f"{name} does not run in this process (running: {', '.join(self.mads) or 'none'})")
        announcer = next(a for a in self._announcers if a.address == self.mads[name].address)
        await announcer.stop()
        self._announcers.remove(announcer)
        await self.mads.pop(name).stop()
        package = registry.MADS[name].partition(":")[0]
        old_modules = {m: sys.modules.pop(m) for m in list(sys.modules) if m == package or m.startswith(package + ".")}
        importlib.invalidate_caches()
        try:
            cls = registry.load(name)
            mad = await self._start_mad(
                name, cls, validate_mad_section(name, cls.config_model, self.settings.section(name))
            )
        except BaseException:
            for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
                del sys.modules[module]
            sys.modules.update(old_modules)
            await self._start_mad(name, self.classes[name], self.configs[name])
            raise
        self.classes[name] = cls
        log.info("reloaded %s", name)
        return mad

    async def _start_mad(self, name: str, cls: type[MAD], config: Any) -> MAD:
        mad = cls(
            MadContext(
                bus=self.bus,
                data_dir=self.data_dir,
                config=config,
                capabilities=self.capabilities,
                redactor=self.redactor,
            )
        )
        if self.sandbox is not None:
            self.sandbox.grant(mad)
        await mad.start()
        self.mads[name] = mad
        announcer = PresenceAnnouncer(self.bus, mad.address, mad.name, mad.card(), self.process, instance=new_id())
        await announcer.start()
        self._announcers.append(announcer)
        return mad

    async def _announce_config_changes(self) -> None:
        """Publish what changed in the configuration since the last start (McNamara audits it)."""
        changes = config_changes.detect(
            self.data_dir, config_changes.sections_of(self.settings.model_dump(mode="json", exclude={"source"}))
        )
        for change in changes:
            await self.bus.publish(
                Envelope(
                    sender=names.HOST,
                    recipient=CONFIG_CHANGE,
                    kind=Kind.EVENT,
                    content=[DataPart(value=change.model_dump(mode="json"))],
                )
            )

    async def stop(self) -> None:
        """Stop taking requests, let in-flight work finish, then close the bus and storage."""
        if self._freezer is not None:
            self._freezer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._freezer
            self._freezer = None
        for announcer in reversed(self._announcers):
            await announcer.stop()
        self._announcers.clear()
        await self.directory.stop()
        if self._quarantine is not None:
            await self._quarantine.stop()
        # Drain first: in-flight handlers finish and the wiretap flushes before storage closes.
        await self.bus.close(drain_timeout=self.settings.ecosystem.drain_timeout)
        await self.telemetry.stop()
        for name in reversed(list(self.mads)):
            try:
                await self.mads[name].stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.mads.clear()
        if self.sandbox is not None:
            await self.sandbox.close()


__all__ = ["ConfigError", "Host", "make_bus", "prepare_data_dir"]
