"""The OpenAPI 3.1 document of the JSON API, generated from the same pydantic models the routes use.

Operations are declared once in :data:`OPERATIONS` (a test checks the list matches
the router); request and response schemas come from the models, so the document
cannot drift from what the handlers validate and return. The stream WebSocket is
described in ``info.description`` (OpenAPI has no way to express it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.auth.sessions import COOKIE
from gateway.routes.regeneration import RejectBody, RunList, RunPath, Started
from gateway.schemas import (
    Alert,
    AlertList,
    AlertPath,
    AlertsQuery,
    ArtifactPath,
    CancelResult,
    Conversation,
    ConversationPage,
    ConversationPath,
    CreateConversation,
    EmptyBody,
    ErrorResponse,
    Health,
    HistoryQuery,
    LoginRequest,
    MadList,
    MessagePage,
    MessageResult,
    PageQuery,
    PostMessage,
    SessionInfo,
    VoiceInfo,
)
from regeneration.run import RunSummary
from regeneration.service import Decided, StartRun

REF = "#/components/schemas/{model}"
AUTH_ERRORS = (401, 403, 429)
BODY_ERRORS = (400, 408, 413, 415, 422)
UPSTREAM_ERRORS = (502, 503, 504)

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON (the message says where), including nesting over 64 levels, integers over 64 digits, "
    "NaN/Infinity and duplicate object keys.",
    401: "No valid credentials (bearer token or session cookie).",
    403: "The client IP is blocked, the CSRF token is missing or wrong, or the principal lacks the role "
    "(or the conversation is another person's: an operator may read it, not write in it).",
    404: "No such resource (another person's conversation is answered exactly like a missing one).",
    408: "The request body did not arrive within the gateway's body timeout.",
    409: "The turn was cancelled (`POST …/cancel`) before it was answered.",
    413: "The body is over the gateway's max_body_bytes (1 MiB by default), e.g. a message text near its "
    "100 000-character limit written in multi-byte characters.",
    415: "The body is not application/json.",
    422: "A field is invalid; `fields` names each one and why.",
    429: "Rate limited (retry after `Retry-After` seconds), or `budget_exceeded`: an LLM budget is spent.",
    502: "A MAD reported an error (its code and message are kept).",
    503: "A MAD is not running, its queue is full (`backpressure`), the bus, a store or the audit trail is "
    "unavailable, or the ecosystem is shutting down; `retryable` says whether trying again can help.",
    504: "A MAD did not answer in time.",
}

DESCRIPTION = """The mad-ecosystem gateway: Grace's chat, conversations stored by Rogers, and McNamara's alerts.

Authenticate with `Authorization: Bearer mad_…` (tokens from `uv run python ecosystem.py tokens create NAME`) or
with the session cookie from `POST /api/session` (a token, or the one-time code of the first-run link). Cookie
sessions must send the session's CSRF token as `X-CSRF-Token` on every POST. Every error body is
`{"error": {code, message, fields[{field, reason}], retryable}}`.

A store that cannot write answers 503 `storage_unavailable` (`retryable: true`, with `Retry-After`): nothing was
stored, and nothing will be later. Send an `Idempotency-Key` header (1-128 of letters, digits, `_-.:`) with
`POST …/messages` (or `idempotency_key` in a socket frame) and a retry never stores twice: a key whose message was
acknowledged answers the stored reply; one still being answered gets 409 `in_progress`.

WebSocket (not expressible in OpenAPI): `GET /api/conversations/{conversation_id}/stream` upgrades to a socket that
streams `delta` frames of the conversation and accepts `{"type": "message", "text": ...}` frames. It needs the same
credentials as the API and, when an `Origin` header is sent (browsers always send one), an origin equal to the
gateway's own (the address it is bound to, not the `Host` header) or a configured trusted origin; otherwise 403
before the upgrade.

Two more doors follow other protocols' specifications and are not described here: the OpenAI-compatible chat API
under `/v1` (`GET /v1/models`, `POST /v1/chat/completions`, streaming included; errors in OpenAI's shape) and the MCP
Streamable HTTP endpoint `/mcp` (the MADs' tools). Both take the same bearer tokens. `POST /api/transcriptions` takes
a raw recording (`Content-Type: audio/webm`, `audio/ogg`, `audio/wav`…, at most `max_bytes` from `GET /api/voice`;
optional `?language=en`) and answers `{"text", "model"}`: Fiedler's transcription of it, for the person to send.
"""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    response: type[BaseModel] | None
    status: int = 200
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_model: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    media_type: str = "application/json"


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/healthz",
        "healthz",
        "Liveness, each store's state and bus counters (no authentication).",
        Health,
        public=True,
    ),
    Operation(
        "post",
        "/api/session",
        "login",
        "Sign in with a token; sets the HttpOnly session cookie and returns the CSRF token.",
        SessionInfo,
        body=LoginRequest,
        errors=(*BODY_ERRORS, 401, 403, 429, 503),
        public=True,
    ),
    Operation("get", "/api/session", "session", "Who is signed in (and the session's CSRF token).", SessionInfo),
    Operation(
        "post",
        "/api/session/logout",
        "logout",
        "End the cookie session (a no-op for bearer tokens).",
        None,
        status=204,
        body=EmptyBody,
        body_required=False,
        errors=BODY_ERRORS,
    ),
    Operation("get", "/api/mads", "list_mads", "The MADs in the directory with their MCP tool descriptors.", MadList),
    Operation(
        "post",
        "/api/conversations",
        "create_conversation",
        "Start a conversation (Rogers).",
        Conversation,
        status=201,
        body=CreateConversation,
        body_required=False,
        errors=(*BODY_ERRORS, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/api/conversations",
        "list_conversations",
        "Conversations, newest first, paged by cursor.",
        ConversationPage,
        query=PageQuery,
        errors=(422, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/api/conversations/{conversation_id}",
        "get_conversation",
        "One conversation.",
        Conversation,
        path_model=ConversationPath,
        errors=(404, 422, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/api/conversations/{conversation_id}/messages",
        "history",
        "A conversation's stored messages, paged by cursor.",
        MessagePage,
        query=HistoryQuery,
        path_model=ConversationPath,
        errors=(404, 422, *UPSTREAM_ERRORS),
    ),
    Operation(
        "post",
        "/api/conversations/{conversation_id}/messages",
        "post_message",
        "Say something to Grace in a conversation; returns her reply once it is stored.",
        MessageResult,
        body=PostMessage,
        path_model=ConversationPath,
        errors=(*BODY_ERRORS, 404, 409, *UPSTREAM_ERRORS),
    ),
    Operation(
        "post",
        "/api/conversations/{conversation_id}/cancel",
        "cancel_turn",
        "Stop the work of your messages still being answered in this conversation; they end with 409 cancelled.",
        CancelResult,
        body=EmptyBody,
        body_required=False,
        path_model=ConversationPath,
        errors=(*BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/api/conversations/{conversation_id}/artifacts/{artifact_id}",
        "get_artifact",
        "A file a MAD attached to the conversation (a chart, a spreadsheet, a report); images inline, others as a "
        "download. Its content type comes from the file name's extension, from a short allow-list.",
        None,
        path_model=ArtifactPath,
        errors=(404, 422, *UPSTREAM_ERRORS),
        media_type="application/octet-stream",
    ),
    Operation(
        "get",
        "/api/alerts",
        "list_alerts",
        "McNamara's security alerts, most recent activity first.",
        AlertList,
        query=AlertsQuery,
        errors=(422, *UPSTREAM_ERRORS),
    ),
    Operation(
        "post",
        "/api/alerts/{alert_id}/acknowledge",
        "acknowledge_alert",
        "Mark an alert as handled (operators only).",
        Alert,
        body=EmptyBody,
        body_required=False,
        path_model=AlertPath,
        errors=(*BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics in the text exposition format.",
        None,
        errors=(503,),
        media_type="text/plain",
    ),
    Operation(
        "get",
        "/api/voice",
        "voice",
        "Whether voice input is available (a speech-to-text model is configured) and the largest recording.",
        VoiceInfo,
        errors=UPSTREAM_ERRORS,
    ),
    Operation(
        "get",
        "/api/regeneration/runs",
        "list_regeneration_runs",
        "Regeneration runs, newest first; `awaiting_approval` marks those waiting for a decision (operators only; "
        "anyone else gets 403, audited).",
        RunList,
        errors=(503,),
    ),
    Operation(
        "post",
        "/api/regeneration/runs",
        "start_regeneration",
        "Regenerate one MAD from its requirements on a pinned model within a budget; the run goes on in the "
        "background (`GET …/runs/{run_id}`). Operators only. 422 `model_not_pinned` for an alias that can drift.",
        Started,
        status=202,
        body=StartRun,
        errors=(*BODY_ERRORS, *UPSTREAM_ERRORS),
    ),
    Operation(
        "get",
        "/api/regeneration/runs/{run_id}",
        "get_regeneration_run",
        "One run: its state, the architectural report, the confined test results, the diff (while it waits), the "
        "cost, the decision and each running ecosystem's reload (operators only).",
        RunSummary,
        path_model=RunPath,
        errors=(404, 503),
    ),
    Operation(
        "post",
        "/api/regeneration/runs/{run_id}/approve",
        "approve_regeneration",
        "Merge the run's change into the source and reload that MAD in the running ecosystem (the others keep "
        "running). 409 if the run is not awaiting approval. Operators only.",
        Decided,
        body=EmptyBody,
        body_required=False,
        path_model=RunPath,
        errors=(*BODY_ERRORS, 404, 409, 503),
    ),
    Operation(
        "post",
        "/api/regeneration/runs/{run_id}/reject",
        "reject_regeneration",
        "Discard the run's change: the source and the running MAD stay as they were. Operators only.",
        Decided,
        body=RejectBody,
        body_required=False,
        path_model=RunPath,
        errors=(*BODY_ERRORS, 404, 409, 503),
    ),
    Operation("get", "/api/openapi.json", "openapi", "This document.", None, media_type="application/json"),
)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query/path parameter cannot be JSON null: drop the null branch of an optional field."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            return {**kept[0], **rest}
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(copy.deepcopy(prop))
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if description:
            param["description"] = description
        param["schema"] = prop
        params.append(param)
    return params


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}}
    return response


def build_document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        operation: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
        params: list[dict[str, Any]] = []
        if op.path_model is not None:
            params += _parameters(op.path_model, "path")
        if op.query is not None:
            params += _parameters(op.query, "query")
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        ok: dict[str, Any] = {"description": "Success."}
        if op.response is not None:
            ok["content"] = {op.media_type: {"schema": refs[(op.response, "serialization")]}}
        elif op.status != 204:
            ok["content"] = {op.media_type: {"schema": {"type": "object"} if "json" in op.media_type else {}}}
        responses: dict[str, Any] = {str(op.status): ok}
        errors = op.errors if op.public else (*AUTH_ERRORS, *op.errors)
        for status in sorted(set(errors)):
            responses[str(status)] = _error_response(status)
        operation["responses"] = responses
        operation["security"] = [] if op.public else [{"bearer": []}, {"cookie": []}]
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mad-ecosystem gateway", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "mad_ + 43 urlsafe characters"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": COOKIE, "description": "from POST /api/session"},
            },
        },
    }
