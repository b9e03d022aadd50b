"""Artifacts: files a MAD produced (a chart, a spreadsheet, a report) attached to a conversation.

An artifact is content-addressed (its id is the SHA-256 of its bytes), size-capped, and belongs
to one conversation: Rogers keeps it beside that conversation's messages and serves it only to
whoever may read the conversation. A MAD attaches files with :func:`attach` (one command to
Rogers, on behalf of the work's principal) and puts the returned :class:`ArtifactRef` in its
reply as an :func:`artifact_part`, which the gateway and the web chat recognise by its media type.

The content type is never taken from the producer: it follows from the file name's extension,
from a short allow-list (:data:`CONTENT_TYPES`); anything else is served as
``application/octet-stream``, as a download.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.envelope import DataPart
from mads.core import names

if TYPE_CHECKING:
    from mads.core.base import MAD

ARTIFACT_MEDIA_TYPE: Final = "application/vnd.mad.artifact+json"
"""Media type of a data part carrying an :class:`ArtifactRef`."""

MAX_ARTIFACT_BYTES: Final = 8 * 1024 * 1024
"""Largest artifact Rogers keeps (a chart is tens of kB, a report a few hundred)."""

NAME_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9._\- ]{0,99}$"
"""A plain file name: no directories, no leading dot, no control characters."""

CONTENT_TYPES: Final[dict[str, str]] = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".pdf": "application/pdf",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
    ".txt": "text/plain",
    ".json": "application/json",
}
"""The only content types an artifact is served with, by extension."""

INLINE_TYPES: Final = frozenset({"image/png", "image/svg+xml", "image/jpeg"})
"""Shown in the page (as ``<img>``, where an SVG's scripts never run); everything else downloads."""

FALLBACK_TYPE: Final = "application/octet-stream"


def content_type_for(name: str) -> str:
    """The content type an artifact named ``name`` is stored and served with."""
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:].lower(), FALLBACK_TYPE) if dot > 0 else FALLBACK_TYPE


def disposition_for(content_type: str) -> Literal["inline", "attachment"]:
    return "inline" if content_type in INLINE_TYPES else "attachment"


class ArtifactRef(BaseModel):
    """Where to find one artifact: what a reply carries instead of the bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the content, hex")
    name: str = Field(pattern=NAME_PATTERN, description="file name shown to people and used for downloads")
    content_type: str = Field(max_length=128)
    size: int = Field(ge=0, le=MAX_ARTIFACT_BYTES)
    conversation_id: str = Field(min_length=1, max_length=64)

    @property
    def path(self) -> str:
        """The gateway path that serves it (to those who may read the conversation)."""
        return f"/api/conversations/{self.conversation_id}/artifacts/{self.id}"


@dataclass(frozen=True)
class ArtifactFile:
    """A file to attach: its name and bytes."""

    name: str
    content: bytes


def artifact_part(ref: ArtifactRef) -> DataPart:
    """The reply part that shows ``ref`` in the chat (inline for images, a download link otherwise)."""
    return DataPart(media_type=ARTIFACT_MEDIA_TYPE, value=ref.model_dump(mode="json"))


def artifact_refs(parts: Iterable[object]) -> list[ArtifactRef]:
    """The artifacts referenced by the data parts among ``parts``."""
    return [
        ArtifactRef.model_validate(p.value)
        for p in parts
        if isinstance(p, DataPart) and p.media_type == ARTIFACT_MEDIA_TYPE
    ]


def found_in(value: object) -> list[ArtifactRef]:
    """Artifact references in a tool's result: under ``artifact`` or ``artifacts`` of a result object.

    This is how a thought keeps the files its tools made: the Imperator puts each one found in
    its reply, so a chart made during a handoff reaches the person who asked for it.
    """
    if not isinstance(value, dict):
        return []
    candidates: list[object] = []
    single = value.get("artifact")
    if single is not None:
        candidates.append(single)
    many = value.get("artifacts")
    if isinstance(many, list):
        candidates.extend(many)
    refs: list[ArtifactRef] = []
    for candidate in candidates:
        try:
            refs.append(ArtifactRef.model_validate(candidate))
        except ValueError:
            continue
    return refs


async def attach(mad: MAD, conversation_id: str, files: Iterable[ArtifactFile]) -> list[ArtifactRef]:
    """Attach ``files`` to ``conversation_id`` through Rogers, for the current work's principal.

    Raises :class:`~mads.core.errors.RemoteError` (``not_found`` for a conversation the principal may
    not write to, ``too_large`` over :data:`MAX_ARTIFACT_BYTES`) like any peer call.
    """
    refs: list[ArtifactRef] = []
    for file in files:
        value = await mad.call(
            names.ROGERS,
            "attach_artifact",
            {
                "conversation_id": conversation_id,
                "name": file.name,
                "content_b64": base64.b64encode(file.content).decode(),
            },
            conversation_id=conversation_id,
        )
        refs.append(ArtifactRef.model_validate(value))
    return refs


async def fetch(mad: MAD, conversation_id: str, artifact_id: str) -> tuple[ArtifactRef, bytes]:
    """An artifact of ``conversation_id`` and its bytes, read through Rogers for the current principal
    (who must be able to read that conversation: others get ``not_found``)."""
    value = await mad.call(
        names.ROGERS,
        "read_artifact",
        {"conversation_id": conversation_id, "artifact_id": artifact_id},
        conversation_id=conversation_id,
    )
    if not isinstance(value, dict):
        raise ValueError("rogers.read_artifact answered without an artifact")
    return ArtifactRef.model_validate(value["artifact"]), base64.b64decode(str(value["content_b64"]))


__all__ = [
    "ARTIFACT_MEDIA_TYPE",
    "CONTENT_TYPES",
    "MAX_ARTIFACT_BYTES",
    "NAME_PATTERN",
    "ArtifactFile",
    "ArtifactRef",
    "artifact_part",
    "artifact_refs",
    "attach",
    "content_type_for",
    "disposition_for",
    "fetch",
    "found_in",
]
