"""The JSON API: health, the MAD directory, conversations and their messages."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from aiohttp import web

from bus.envelope import FieldError
from gateway.errors import ApiError
from gateway.mad_client import ROGERS
from gateway.openapi import build_document
from gateway.principal import principal_of, user_address
from gateway.schemas import (
    CancelResult,
    CreateConversation,
    EmptyBody,
    HistoryQuery,
    MadInfo,
    PageQuery,
    PostMessage,
    artifact_path,
    conversation_id,
    idempotency_key,
    read_body,
    read_query,
)
from gateway.state import state_of
from mads.core.artifacts import ArtifactRef, disposition_for

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness, each store's state (``degraded`` when one cannot write) and the bus counters; no authentication."""
    state = state_of(request)
    stats = state.bus.stats()
    alive = sorted(e.mad for e in state.directory.latest() if e.alive)
    stores, writable = await state.storage.report(set(alive))
    return web.json_response(
        {
            "status": "draining" if state.drain.closing else ("ok" if writable else "degraded"),
            "mads_alive": alive,
            "storage": stores,
            "bus": {
                "published": stats.published,
                "delivered": stats.delivered,
                "rejected": stats.rejected,
                "handler_errors": stats.handler_errors,
                "undeliverable": stats.undeliverable,
                "queued": sum(stats.queue_depth.values()),
            },
        }
    )


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (authenticated like everything else)."""
    return web.json_response(build_document())


@routes.get("/api/mads")
async def list_mads(request: web.Request) -> web.Response:
    """The MADs the directory knows; the body is rebuilt only when an announcement arrived or one went silent."""
    state = state_of(request)
    directory = state.directory
    shown = (directory.version, directory.alive_now())
    cached = state.mads_body
    if cached is None or cached[0] != shown:
        mads = [
            MadInfo(
                name=e.mad,
                address=e.address,
                description=str(e.card.get("description", "")),
                alive=e.alive,
                process=e.process,
                tools=list(e.card.get("tools", [])),
                instance=e.instance,
            ).model_dump(mode="json")
            for e in directory.entries()
        ]
        cached = state.mads_body = (shown, json.dumps({"mads": mads}).encode())
    return web.Response(body=cached[1], content_type="application/json", charset="utf-8")


@routes.post("/api/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    body = await read_body(request, CreateConversation)
    principal = principal_of(request)
    arguments = {"created_by": user_address(principal)}
    if body.title is not None:
        arguments["title"] = body.title
    created = await state_of(request).client.call(ROGERS, "create_conversation", arguments, principal=principal)
    return web.json_response(created, status=201)


def as_query_error(exc: ApiError, parameters: set[str]) -> ApiError:
    """Rogers refused an argument the client sent as a query parameter: name it as ``query.<name>``."""
    if exc.status != 422:
        return exc
    named = [f for f in exc.info.fields if f.field.rsplit(".", 1)[-1] in parameters]
    if not named:
        return exc
    fields = [FieldError(field=f"query.{f.field.rsplit('.', 1)[-1]}", reason=f.reason) for f in named]
    summary = "; ".join(f"{f.field}: {f.reason}" for f in fields)
    return ApiError(422, "invalid_request", f"validation failed: {summary}", fields)


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    query = read_query(request, PageQuery)
    try:
        page = await state_of(request).client.call(
            ROGERS, "list_conversations", query.model_dump(exclude_none=True), principal=principal_of(request)
        )
    except ApiError as exc:
        raise as_query_error(exc, {"cursor"}) from None
    return web.json_response(page)


@routes.get("/api/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    cid = conversation_id(request)
    return web.json_response(await state_of(request).client.conversation(cid, principal=principal_of(request)))


@routes.get("/api/conversations/{conversation_id}/messages")
async def history(request: web.Request) -> web.Response:
    cid = conversation_id(request)
    query = read_query(request, HistoryQuery)
    client, principal = state_of(request).client, principal_of(request)
    await client.conversation(cid, principal=principal)
    arguments = {"conversation_id": cid, **query.model_dump(exclude_none=True)}
    try:
        return web.json_response(await client.call(ROGERS, "history", arguments, principal=principal))
    except ApiError as exc:
        raise as_query_error(exc, {"cursor"}) from None


@routes.post("/api/conversations/{conversation_id}/cancel")
async def cancel_turn(request: web.Request) -> web.Response:
    """Stop the work of the person's messages still being answered in this conversation (their turns)."""
    cid = conversation_id(request)
    await read_body(request, EmptyBody)
    client, principal = state_of(request).client, principal_of(request)
    await client.conversation(cid, principal=principal)
    cancelled = client.cancel(cid, principal=principal)
    return web.json_response(CancelResult(conversation_id=cid, cancelled=cancelled).model_dump(mode="json"))


@routes.post("/api/conversations/{conversation_id}/messages")
async def post_message(request: web.Request) -> web.Response:
    cid = conversation_id(request)
    body = await read_body(request, PostMessage)
    key = idempotency_key(request)
    result = await state_of(request).client.send_message(
        cid, body.text, principal=principal_of(request), idempotency_key=key
    )
    return web.json_response(result.model_dump(mode="json"))


@routes.get("/api/conversations/{conversation_id}/artifacts/{artifact_id}", name="artifact")
async def artifact(request: web.Request) -> web.Response:
    """A file a MAD attached to the conversation, to those who may read the conversation (404 otherwise).

    Its content type comes from an allow-list by extension (never from the producer); images are
    shown inline, everything else downloads, and a strict CSP with ``sandbox`` keeps an SVG inert.
    """
    path = artifact_path(request)
    value = await state_of(request).client.call(
        ROGERS,
        "read_artifact",
        {"conversation_id": path.conversation_id, "artifact_id": path.artifact_id},
        principal=principal_of(request),
    )
    assert isinstance(value, dict)
    ref = ArtifactRef.model_validate(value["artifact"])
    content = base64.b64decode(str(value["content_b64"]))
    disposition = f"{disposition_for(ref.content_type)}; filename*=UTF-8''{quote(ref.name, safe='')}"
    return web.Response(
        body=content,
        content_type=ref.content_type,
        headers={"Content-Disposition": disposition, "ETag": f'"{ref.id}"'},
    )
