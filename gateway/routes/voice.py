"""Voice input: whether the page may offer a microphone, and the transcription of a recording.

The page records in the browser and posts the recording here as the raw body
(``Content-Type: audio/webm`` or another audio type); Fiedler, the only caller of
models, transcribes it with the model configured for the ``transcription`` role and the
text comes back for the person to edit and send. With no such model, ``GET /api/voice``
says so and the page shows no microphone. The recording is not stored (Rogers strips it
from the request it keeps); the usage is billed to the person like any model call.
"""

from __future__ import annotations

import base64

from aiohttp import web
from pydantic import Field

from bus.envelope import FieldError
from gateway.errors import ApiError
from gateway.principal import principal_of
from gateway.schemas import Strict, VoiceInfo, read_query, read_raw
from gateway.state import state_of
from mads.core import names

routes = web.RouteTableDef()

TRANSCRIPTION_ROLE = "transcription"


class TranscriptionQuery(Strict):
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$", description="ISO-639-1 code of the speech.")


@routes.get("/api/voice")
async def voice(request: web.Request) -> web.Response:
    """Whether a speech-to-text model is configured (the page shows its microphone only then)."""
    state = state_of(request)
    try:
        report = await state.client.call(names.FIEDLER, "models", {}, principal=principal_of(request))
    except ApiError as exc:
        if exc.status != 503:
            raise
        report = None
    roles = report.get("roles") if isinstance(report, dict) else None
    available = isinstance(roles, dict) and TRANSCRIPTION_ROLE in roles
    info = VoiceInfo(transcription=available, max_bytes=state.settings.gateway.max_body_bytes)
    return web.json_response(info.model_dump(mode="json"))


@routes.post("/api/transcriptions")
async def transcribe(request: web.Request) -> web.Response:
    """The text of a recording (the raw body, an ``audio/*`` type), for the person to edit and send."""
    query = read_query(request, TranscriptionQuery)
    media_type = request.content_type
    if not media_type.startswith("audio/"):
        reason = f"must be an audio type such as audio/webm, got {media_type or 'none'}"
        raise ApiError(
            415, "unsupported_media_type", f"Content-Type {reason}", [FieldError(field="Content-Type", reason=reason)]
        )
    audio = await read_raw(request)
    if not audio:
        reason = "the recording is empty"
        raise ApiError(422, "invalid_request", f"body: {reason}", [FieldError(field="body", reason=reason)])
    arguments: dict[str, str] = {"audio_base64": base64.b64encode(audio).decode("ascii"), "media_type": media_type}
    if query.language:
        arguments["language"] = query.language
    result = await state_of(request).client.call(
        names.FIEDLER, "transcribe", dict(arguments), principal=principal_of(request)
    )
    return web.json_response(result)
