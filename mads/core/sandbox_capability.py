"""The WASM sandbox as a host capability: one Sandbox per process, and the ``run_python`` tool.

The host creates a :class:`SandboxCapability` when a MAD of its process is granted the sandbox
(``[sandbox] grants``) or cannot work without it (a MAD class with ``uses_sandbox = True``, such
as Marco, whose HTML parsing runs in a cell). The runtime is loaded from the per-machine cache
(``[sandbox] cache_dir``, default the user's cache directory), or compiled into it on the first start
on a machine, in a worker thread while the rest of the host boots. Until then ``run_python`` answers
with the retryable error ``sandbox_starting`` ("sandbox still starting") instead of waiting.

Events: every limit a run hits is published on ``events.sandbox_limit`` as a
:class:`SandboxLimitEvent` with ``violation = false``. A cell cannot tell an escape attempt from a
bug (reading ``/etc/passwd`` fails inside the guest with ``FileNotFoundError``; sockets, threads and
subprocesses fail with ``OSError``), so ``run_python`` never reports a violation; URL refusals are
Marco's to report (``events.url_refused``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from bus.envelope import FieldError
from bus.topics import SANDBOX_LIMIT
from mads.core.artifacts import NAME_PATTERN, ArtifactFile, ArtifactRef, attach
from mads.core.base import MAD, ToolFailure
from mads.core.settings import ConfigError, SandboxSection
from mads.core.tools import Call, Tool
from sandbox import LimitMaxima, RunResult, Sandbox, SandboxError, SandboxStarting
from sandbox.limits import MODULE_MIN_MEMORY

log = logging.getLogger(__name__)

RUN_PYTHON_DESCRIPTION = (
    "Run Python 3.15 in a fresh WASM sandbox with numpy, pandas, scipy, scikit-learn, statsmodels, matplotlib, "
    "seaborn, lxml, beautifulsoup4, openpyxl, xlsxwriter, reportlab, pypdf, networkx and sympy: no network, no "
    "processes, no threads, an empty environment, a private in-memory scratch directory as the working "
    "directory, and read-only input files under /input/<name>. Returns stdout, stderr, exit_code, limit_hit "
    "(timeout, fuel, memory, output, scratch or null), fuel_used, duration_ms and, with collect_files, the files "
    "left in scratch."
)


class SandboxLimitEvent(BaseModel):
    """Payload of ``events.sandbox_limit``: a budget was exhausted (``violation`` marks escape attempts)."""

    model_config = ConfigDict(extra="forbid")

    mad: str
    tool: str
    limit: str = Field(description="timeout, fuel, memory, output, scratch (cell) or a tool's own cap, e.g. max_bytes")
    violation: bool = False
    conversation_id: str | None = None
    detail: str = ""
    fuel_used: int | None = None
    duration_ms: float | None = None


async def publish_limit(
    mad: MAD,
    call: Call | None,
    *,
    tool: str,
    limit: str,
    detail: str = "",
    result: RunResult | None = None,
) -> None:
    """Publish one limit hit on ``events.sandbox_limit`` from ``mad``."""
    conversation_id = call.conversation_id if call is not None else None
    event = SandboxLimitEvent(
        mad=mad.name,
        tool=tool,
        limit=limit,
        conversation_id=conversation_id,
        detail=detail[:500],
        fuel_used=result.fuel_used if result is not None else None,
        duration_ms=result.duration_ms if result is not None else None,
    )
    await mad.emit(SANDBOX_LIMIT, event.model_dump(mode="json"), conversation_id=conversation_id)


def limits_model(maxima: LimitMaxima) -> type[BaseModel]:
    """Per-run limits a caller may ask for; each field's maximum is the configured ceiling (in the schema too)."""
    return create_model(
        "RunPythonLimits",
        __config__=ConfigDict(extra="forbid"),
        timeout_s=(float | None, Field(None, gt=0, le=maxima.timeout_s, description="wall-clock seconds")),
        fuel=(int | None, Field(None, gt=0, le=maxima.fuel, description="instruction budget (print(1) ~2e8)")),
        memory_bytes=(
            int | None,
            Field(None, ge=MODULE_MIN_MEMORY, le=maxima.memory_bytes, description="linear memory cap"),
        ),
        output_bytes=(int | None, Field(None, gt=0, le=maxima.output_bytes, description="cap per stream")),
        collect_bytes=(int | None, Field(None, ge=0, le=maxima.collect_bytes, description="bytes of files returned")),
        scratch_bytes=(int | None, Field(None, ge=0, le=maxima.scratch_bytes, description="bytes kept in scratch")),
        scratch_files=(int | None, Field(None, ge=0, le=maxima.scratch_files, description="files kept in scratch")),
    )


def run_python_args_model(maxima: LimitMaxima) -> type[BaseModel]:
    """The ``run_python`` arguments, bounded by ``maxima`` so the bus contract refuses excess (naming the field)."""
    return create_model(
        "RunPythonArgs",
        __config__=ConfigDict(extra="forbid"),
        code=(str, Field(min_length=1, max_length=maxima.code_bytes, description="the program (runs as __main__)")),
        input_files=(
            dict[str, str],
            Field(
                default_factory=dict,
                max_length=maxima.input_files,
                description="name -> text, readable by the program at /input/<name> (names: [A-Za-z0-9._-])",
            ),
        ),
        limits=(limits_model(maxima) | None, Field(None, description="budgets; omitted ones use the defaults")),
        collect_files=(bool, Field(False, description="return the files the program left in its scratch directory")),
        artifacts=(
            list[Annotated[str, Field(pattern=NAME_PATTERN)]],
            Field(
                default_factory=list,
                max_length=MAX_ARTIFACTS_PER_RUN,
                description="names of files the program writes in its working directory (a chart.png, a "
                "table.xlsx, a report.pdf) to attach to the conversation as artifacts the person can open",
            ),
        ),
    )


MAX_ARTIFACTS_PER_RUN = 16
RUN_LIMIT_FIELDS = ("timeout_s", "fuel", "memory_bytes", "output_bytes", "collect_bytes")
"""The per-run limits (each bounded by the process's ceiling of the same name)."""


def files_named(result: RunResult, wanted: list[str]) -> dict[str, bytes]:
    """The bytes of the scratch files ``wanted`` from a run made with ``collect_files``.

    Raises :class:`ToolFailure` naming the first file the program did not write, or that was
    larger than the run's ``collect_bytes`` allowed to bring back.
    """
    by_path = {f.path: f for f in result.files}
    found: dict[str, bytes] = {}
    for name in wanted:
        file = by_path.get(name)
        if file is None:
            raise ToolFailure(
                "artifact_missing",
                f"the program did not write {name!r} in its working directory",
                fields=[FieldError(field="artifacts", reason=f"{name}: no such file after the run")],
            )
        if file.truncated:
            raise ToolFailure(
                "artifact_too_large",
                f"{name!r} is {file.size} bytes, more than the run's collect_bytes brought back",
                fields=[FieldError(field="artifacts", reason=f"{name}: {file.size} bytes")],
            )
        found[name] = base64.b64decode(file.content) if file.encoding == "base64" else file.content.encode()
    return found


class SandboxCapability:
    """One process's sandbox: starts it in the background, grants ``run_python``, reports status, closes it."""

    def __init__(self, section: SandboxSection, cache_dir: Path | None) -> None:
        self.section = section
        self.maxima = LimitMaxima.model_validate(section.maxima)
        self.grants = frozenset(section.grants)
        self.progress: list[str] = []
        self.sandbox = Sandbox(
            cache_dir,
            max_concurrency=section.max_concurrency,
            maxima=self.maxima,
            pool_size=section.pool_size,
            pool_cpu_share=section.pool_cpu_share,
            on_progress=self._progress,
        )
        self.cache_dir = self.sandbox.cache_dir
        self._start: asyncio.Task[None] | None = None

    def _progress(self, message: str) -> None:
        # Called from the start thread, once before a first-start compile and once after it: one log line each.
        self.progress.append(message)
        log.warning("sandbox: %s", message)

    # ---- lifecycle -------------------------------------------------------------------

    def begin(self) -> None:
        """Start compiling or loading the module in a worker thread; the host keeps booting meanwhile."""
        if self._start is None:
            self._start = asyncio.create_task(self.sandbox.start(), name="sandbox-start")

    async def ready(self) -> Sandbox:
        """The started sandbox (waits for the boot-time start); raises ToolFailure if it could not start."""
        self.begin()
        assert self._start is not None
        try:
            await asyncio.shield(self._start)
        except SandboxError as exc:
            raise ToolFailure("sandbox_unavailable", f"the sandbox could not start: {exc}") from None
        return self.sandbox

    def started(self) -> Sandbox:
        """The sandbox if its start has finished; ToolFailure ``sandbox_starting`` (retryable) while it runs."""
        self.begin()
        assert self._start is not None
        if not self._start.done():
            raise ToolFailure(
                "sandbox_starting",
                "sandbox still starting: the Python runtime is being loaded or compiled (the first start on a "
                "machine takes about a minute and a half); retry shortly",
                retryable=True,
            )
        if self._start.cancelled() or self._start.exception() is not None:
            error = "cancelled" if self._start.cancelled() else str(self._start.exception())
            raise ToolFailure("sandbox_unavailable", f"the sandbox could not start: {error}")
        return self.sandbox

    async def close(self) -> None:
        """Wait for a start still in progress (bounded by the compile), then close: in-flight cells finish."""
        if self._start is not None:
            try:
                await self._start
            except Exception:
                log.exception("sandbox start failed")
        await self.sandbox.close()

    def status(self) -> dict[str, JsonValue]:
        """State for operators and tests: starting / ready / failed, and whether the module came from cache."""
        state: Literal["idle", "starting", "ready", "failed"]
        if self._start is None:
            state = "idle"
        elif not self._start.done():
            state = "starting"
        elif self._start.cancelled() or self._start.exception() is not None:
            state = "failed"
        else:
            state = "ready"
        info: dict[str, JsonValue] = {
            "state": state,
            "max_concurrency": self.sandbox.max_concurrency,
            "active_runs": self.sandbox.active_runs,
            "grants": sorted(self.grants),
        }
        if state == "ready":
            info["compiled_from_cache"] = self.sandbox.compiled_from_cache
            info["load_seconds"] = round(self.sandbox.load_seconds, 4)
        elif state == "failed" and self._start is not None and not self._start.cancelled():
            info["error"] = str(self._start.exception())
        return info

    # ---- the run_python tool -----------------------------------------------------------

    def granted(self, mad_name: str) -> bool:
        return mad_name in self.grants

    def grant(self, mad: MAD) -> bool:
        """Add ``run_python`` to ``mad`` if configuration grants it; call before ``mad.start()``."""
        if not self.granted(mad.name):
            return False
        mad.add_tool(self.run_python_tool(mad))
        return True

    def run_python_tool(self, mad: MAD) -> Tool:
        args_model = run_python_args_model(self.maxima)

        async def run_python(args: BaseModel, call: Call) -> JsonValue:
            arguments = args.model_dump()
            wanted: list[str] = arguments.pop("artifacts")
            if not wanted:
                return (await self.run(mad, call, "run_python", **arguments)).model_dump(mode="json")
            if call.conversation_id is None:
                raise ToolFailure("no_conversation", "artifacts are attached to a conversation; this call has none")
            limits = dict(arguments.pop("limits") or {})
            if limits.get("collect_bytes") is None:
                limits["collect_bytes"] = self.maxima.collect_bytes
            result = await self.run(mad, call, "run_python", **{**arguments, "limits": limits, "collect_files": True})
            value = result.model_dump(mode="json")
            if not result.ok:
                return value  # the program failed: its output says why, and there is nothing to attach
            files = files_named(result, wanted)
            refs = await attach(mad, call.conversation_id, [ArtifactFile(n, c) for n, c in files.items()])
            kept = arguments["collect_files"]
            value["files"] = [f for f in value["files"] if kept and f["path"] not in files]
            value["artifacts"] = [ref.model_dump(mode="json") for ref in refs]
            return value

        return Tool.from_model("run_python", RUN_PYTHON_DESCRIPTION, args_model, run_python)

    async def run(
        self,
        mad: MAD,
        call: Call | None,
        tool: str,
        *,
        code: str,
        input_files: Mapping[str, str | bytes] | None = None,
        limits: Mapping[str, Any] | None = None,
        collect_files: bool = False,
    ) -> RunResult:
        """Run ``code`` for ``mad`` and publish any limit it hits. Bad requests raise ValidationError."""
        sandbox = self.started()
        merged = self.maxima.default_limits().model_dump()
        merged.update({k: v for k, v in (limits or {}).items() if v is not None})
        try:
            result = await sandbox.run_python(code, merged, input_files, collect_files)
        except SandboxStarting as exc:
            raise ToolFailure("sandbox_starting", str(exc), retryable=True) from None
        except SandboxError as exc:
            raise ToolFailure("sandbox_unavailable", str(exc), retryable=True) from None
        if result.limit_hit is not None:
            await publish_limit(
                mad,
                call,
                tool=tool,
                limit=result.limit_hit,
                detail=f"run ended with limit_hit={result.limit_hit} (trap={result.trap})",
                result=result,
            )
        return result


async def produce(
    capability: SandboxCapability,
    mad: MAD,
    call: Call,
    tool: str,
    *,
    program: str,
    inputs: Mapping[str, str | bytes],
    outputs: list[str],
) -> list[ArtifactRef]:
    """Run one of a MAD's own programs (a chart maker, a report writer) on the caller's data, in a cell,
    and attach the files it writes to the conversation.

    The program is trusted code; its inputs are not, which is why it runs in the sandbox, with the
    process's ceilings as its limits (importing matplotlib or reportlab takes seconds). A program
    that fails answers with ``generation_failed`` and the last lines of its stderr.
    """
    if call.conversation_id is None:
        raise ToolFailure(
            "no_conversation", f"{mad.name}.{tool} attaches its file to a conversation; this call has none"
        )
    limits = capability.maxima.model_dump(
        include={"timeout_s", "fuel", "memory_bytes", "output_bytes", "collect_bytes"}
    )
    result = await capability.run(mad, call, tool, code=program, input_files=inputs, limits=limits, collect_files=True)
    if not result.ok:
        tail = "\n".join(result.stderr.strip().splitlines()[-6:])
        reason = f"limit hit: {result.limit_hit}" if result.limit_hit else f"exit code {result.exit_code}"
        raise ToolFailure("generation_failed", f"{mad.name}.{tool} could not make its file ({reason}): {tail}"[:2000])
    files = files_named(result, outputs)
    return await attach(mad, call.conversation_id, [ArtifactFile(n, c) for n, c in files.items()])


def sandbox_for_host(
    section: SandboxSection, names: list[str], uses_sandbox: set[str], known: set[str], data_dir: Path
) -> SandboxCapability | None:
    """The process's capability if a MAD here is granted or needs the sandbox, else None."""
    unknown = sorted(set(section.grants) - known)
    if unknown:
        raise ConfigError(f"sandbox.grants: unknown MAD(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if not (set(names) & (set(section.grants) | uses_sandbox)):
        return None
    return SandboxCapability(section, section.cache_dir)


__all__ = [
    "RUN_PYTHON_DESCRIPTION",
    "SandboxCapability",
    "SandboxLimitEvent",
    "files_named",
    "limits_model",
    "produce",
    "publish_limit",
    "run_python_args_model",
    "sandbox_for_host",
]
