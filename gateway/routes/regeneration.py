"""Governed regeneration for operators: start a run, list and show runs, approve or reject one.

Every route is for operators only. Anyone else gets 403 and the refusal is written to McNamara's audit
trail (``regeneration.denied``, outcome ``denied``); starts and decisions are recorded there too, besides
the run's own log. The runs are the ecosystem's :class:`~regeneration.service.RegenerationService`
(passed to the gateway by the entry point); the LLM is reached through Fiedler on the bus, for the
operator who started the run (so it is booked and budgeted to them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bus.envelope import CommandPart, FieldError, Principal
from gateway.auth.audit import AuditUnavailable
from gateway.auth.context import auth_of
from gateway.auth.guard import client_ip
from gateway.errors import ApiError
from gateway.mad_client import upstream_error
from gateway.principal import identity_of, principal_of
from gateway.schemas import EmptyBody, read_body
from gateway.state import state_of
from mads.core import names
from regeneration.pinning import ModelNotPinned
from regeneration.run import DecisionRefused, RunSummary
from regeneration.service import (
    Decided,
    RegenerationService,
    RegenerationUnavailable,
    RunBrief,
    StartRun,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

FIEDLER = names.FIEDLER
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class RunList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[RunBrief]


class Started(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    mad: str


class RunPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(pattern=RUN_ID_PATTERN)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field("", max_length=2000, description="why the change is rejected (kept with the run)")


async def _audit(request: web.Request, action: str, details: dict[str, JsonValue], outcome: str = "success") -> None:
    identity = identity_of(request)
    details = {"route": request.path[:500], "ip": client_ip(request), "role": identity.role, **details}
    event = "regeneration.denied" if outcome == "denied" else f"regeneration.{action}"
    try:
        await auth_of(request).audit.record(event, identity.principal, action, details, outcome=outcome)
    except AuditUnavailable:  # the refusal or the action stands; the run's own log records every decision
        log.error("regeneration %s by %s could not be audited", action, identity.principal)


async def _operator(request: web.Request, action: str) -> RegenerationService:
    """The service, for an operator; anyone else is refused (403) and the refusal audited."""
    identity = identity_of(request)
    if identity.role != "operator":
        await _audit(request, action, {"reason": "the operator role is required"}, outcome="denied")
        raise ApiError(403, "forbidden", f"regeneration is for operators; {identity.principal!r} is a {identity.role}")
    service = state_of(request).regeneration
    if service is None:
        raise ApiError(503, "regeneration_unavailable", "this process runs no regeneration service")
    return service


def _run_id(request: web.Request) -> str:
    run_id = request.match_info["run_id"]
    if not re.match(RUN_ID_PATTERN, run_id):
        raise ApiError(404, "not_found", "no such regeneration run")
    return run_id


def _fiedler_for(
    request: web.Request, principal: Principal, timeout: float
) -> Callable[[str, dict[str, JsonValue]], Awaitable[JsonValue]]:
    """Fiedler's tools, called by command for the operator who started the run (booked to them)."""
    client = state_of(request).client

    async def fiedler(tool: str, arguments: dict[str, JsonValue]) -> JsonValue:
        command = CommandPart(tool=tool, arguments=arguments)
        envelope = client.envelope(FIEDLER, command, principal=principal, conversation_id=None, timeout=timeout)
        reply = await client.send(envelope)
        if reply.error is not None:
            raise upstream_error(FIEDLER, reply.error)
        values = reply.data()
        return values[0] if values else None

    return fiedler


@routes.get("/api/regeneration/runs")
async def list_runs(request: web.Request) -> web.Response:
    """Every regeneration run, newest first; ``awaiting_approval`` marks those waiting for a decision."""
    service = await _operator(request, "list")
    try:
        runs = await service.runs()
    except RegenerationUnavailable as exc:
        raise ApiError(503, "regeneration_unavailable", str(exc)) from None
    return web.json_response(RunList(runs=runs).model_dump(mode="json"))


@routes.post("/api/regeneration/runs")
async def start_run(request: web.Request) -> web.Response:
    service = await _operator(request, "start")
    body = await read_body(request, StartRun)
    principal = principal_of(request)
    try:
        run_id = await service.start(body, principal, _fiedler_for(request, principal, body.max_seconds))
    except ModelNotPinned as exc:
        pinned = [FieldError(field="body.model_id", reason=str(exc))]
        raise ApiError(422, "model_not_pinned", str(exc), pinned) from None
    except RegenerationUnavailable as exc:
        raise ApiError(503, "regeneration_unavailable", str(exc)) from None
    except ValueError as exc:  # "mad: unknown MAD …": the field is named before the colon
        named = str(exc).split(":", 1)[0]
        fields = [FieldError(field=f"body.{named}", reason=str(exc))] if named in StartRun.model_fields else []
        raise ApiError(422, "invalid_request", str(exc), fields) from None
    await _audit(request, "start", {"run_id": run_id, "mad": body.mad, "model": body.model, "model_id": body.model_id})
    return web.json_response(Started(run_id=run_id, mad=body.mad).model_dump(mode="json"), status=202)


@routes.get("/api/regeneration/runs/{run_id}")
async def show_run(request: web.Request) -> web.Response:
    """One run: state, report, test results, diff (while it waits), cost, decision and reloads."""
    service = await _operator(request, "show")
    try:
        summary = await service.summary(_run_id(request))
    except KeyError:
        raise ApiError(404, "not_found", "no such regeneration run") from None
    except RegenerationUnavailable as exc:
        raise ApiError(503, "regeneration_unavailable", str(exc)) from None
    return web.json_response(summary.model_dump(mode="json"))


async def _decide(request: web.Request, action: str) -> Decided:
    service = await _operator(request, action)
    run_id = _run_id(request)
    principal = principal_of(request)
    try:
        if action == "approve":
            await read_body(request, EmptyBody)
            decided = await service.approve(run_id, principal)
        else:
            body = await read_body(request, RejectBody)
            decided = await service.reject(run_id, principal, body.reason)
    except KeyError:
        raise ApiError(404, "not_found", "no such regeneration run") from None
    except DecisionRefused as exc:
        raise ApiError(409, "not_awaiting_approval", str(exc)) from None
    except RegenerationUnavailable as exc:
        raise ApiError(503, "regeneration_unavailable", str(exc)) from None
    await _audit(request, action, {"run_id": run_id, "merged": decided.merged})
    return decided


@routes.post("/api/regeneration/runs/{run_id}/approve")
async def approve_run(request: web.Request) -> web.Response:
    """Merge the run's branch into the source and reload that MAD in the running ecosystem."""
    return web.json_response((await _decide(request, "approve")).model_dump(mode="json"))


@routes.post("/api/regeneration/runs/{run_id}/reject")
async def reject_run(request: web.Request) -> web.Response:
    """Discard the run's change; the tree and the running MAD stay as they were."""
    return web.json_response((await _decide(request, "reject")).model_dump(mode="json"))


__all__ = ["RejectBody", "RunList", "RunPath", "RunSummary", "Started", "routes"]
