"""Rogers's artifact store on real files and a real SQLite database: content-addressed, written once,
private, and checked on read so a damaged file is reported rather than served."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from mads.core.artifacts import ArtifactRef, content_type_for, disposition_for
from mads.rogers.artifacts import ArtifactDamaged, ArtifactStore
from mads.rogers.schemas import AttachArtifactArgs


@pytest.fixture
async def store(tmp_path: Path) -> ArtifactStore:
    artifacts = ArtifactStore(tmp_path / "rogers")
    await artifacts.open()
    yield artifacts  # type: ignore[misc]
    await artifacts.close()


async def test_the_same_bytes_are_kept_once_and_listed_per_conversation(store: ArtifactStore, tmp_path: Path) -> None:
    content = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    first = await store.put("c1", "chart.png", content, "user:ada")
    again = await store.put("c2", "same-chart.png", content, "user:ada")
    other = await store.put("c1", "table.csv", b"a,b\n1,2\n", "user:ada")

    assert first.id == again.id == hashlib.sha256(content).hexdigest()
    assert first.content_type == "image/png" and other.content_type == "text/csv"
    blobs = [p for p in (tmp_path / "rogers" / "artifacts").rglob("*") if p.is_file()]
    assert len(blobs) == 2, blobs
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in blobs)
    assert [a.name for a in await store.list("c1")] == ["chart.png", "table.csv"]
    assert [a.name for a in await store.list("c2")] == ["same-chart.png"]
    assert await store.get("c2", other.id) is None  # attached to c1 only
    assert await store.read(first) == content


async def test_a_changed_or_missing_file_is_reported_not_served(store: ArtifactStore, tmp_path: Path) -> None:
    ref = await store.put("c1", "notes.txt", b"measured 42 units", "user:ada")
    blob = tmp_path / "rogers" / "artifacts" / ref.id[:2] / ref.id
    blob.write_bytes(b"measured 43 units")
    with pytest.raises(ArtifactDamaged, match="no longer match"):
        await store.read(ref)
    blob.unlink()
    with pytest.raises(ArtifactDamaged, match="missing"):
        await store.read(ref)


async def test_it_survives_a_reopen(tmp_path: Path) -> None:
    first = ArtifactStore(tmp_path / "rogers")
    await first.open()
    ref = await first.put("c1", "report.pdf", b"%PDF-1.4 ...", "user:ada")
    await first.close()
    second = ArtifactStore(tmp_path / "rogers")
    await second.open()
    try:
        assert await second.get("c1", ref.id) == ref
        assert await second.read(ref) == b"%PDF-1.4 ..."
    finally:
        await second.close()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("name", "../escape.png", "pattern"),
        ("name", ".hidden", "pattern"),
        ("name", "line\nbreak.png", "pattern"),
        ("content_b64", "not base64!", "base64"),
    ],
)
def test_bad_attachments_are_refused_naming_the_field(field: str, value: str, reason: str) -> None:
    arguments = {"conversation_id": "c1", "name": "ok.png", "content_b64": "aGk=", field: value}
    with pytest.raises(ValidationError) as caught:
        AttachArtifactArgs.model_validate(arguments)
    [error] = caught.value.errors()
    assert error["loc"] == (field,) and reason in str(error["msg"]).lower() + error["type"]


def test_content_types_come_from_an_allow_list_never_from_the_producer() -> None:
    assert content_type_for("chart.svg") == "image/svg+xml"
    assert content_type_for("page.html") == "application/octet-stream"
    assert content_type_for("noextension") == "application/octet-stream"
    assert content_type_for("REPORT.PDF") == "application/pdf"
    assert disposition_for("image/png") == "inline"
    assert disposition_for("text/csv") == disposition_for("application/octet-stream") == "attachment"
    with pytest.raises(ValidationError):
        ArtifactRef(id="0" * 64, name="x.png", content_type="image/png", size=-1, conversation_id="c")
