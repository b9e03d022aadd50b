"""Gates, the document writer: spreadsheets (xlsx, openpyxl) and PDF reports (reportlab) from structured
content, written inside a sandbox cell and attached to the conversation.

The content is the caller's (often an LLM's), so the writers run in a cell; the request is validated
first (sheet names Excel accepts, rows no wider than their header, images that are this conversation's
PNG artifacts). Text that looks like a formula is written as text unless ``formulas`` is set, so data
can never plant a formula in a spreadsheet someone opens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mads.core import names
from mads.core.artifacts import fetch
from mads.core.base import MAD, RemoteError, ToolFailure
from mads.core.sandbox_capability import produce
from mads.core.tools import Call, tool
from mads.gates.schemas import DocumentResult, ReportArgs, SpreadsheetArgs

if TYPE_CHECKING:
    from mads.core.sandbox_capability import SandboxCapability

GUEST = Path(__file__).with_name("guest")
SPREADSHEET_PROGRAM = GUEST.joinpath("spreadsheet.py").read_text(encoding="utf-8")
REPORT_PROGRAM = GUEST.joinpath("report.py").read_text(encoding="utf-8")


class Gates(MAD):
    name = names.GATES
    description = (
        "The document writer: makes spreadsheets (xlsx) and PDF reports (text, bullet lists, tables and "
        "charts) and attaches them to the conversation."
    )
    role_prompt = (
        "You write documents. Use spreadsheet for tables people will work with in Excel or LibreOffice, and "
        "report for a PDF to read or share; a chart made earlier in the conversation can go into a report "
        "section by its artifact id. Say what the document contains when you answer."
    )
    uses_sandbox: ClassVar[bool] = True
    """Every document is written inside a cell."""

    @property
    def capability(self) -> SandboxCapability:
        capability = self.ctx.capabilities.get("sandbox")
        if capability is None:
            raise ToolFailure("sandbox_unavailable", "Gates writes in the sandbox and this process has none")
        return capability

    @tool("Write a spreadsheet (xlsx): sheets of a header row and data rows; attached to the conversation.")
    async def spreadsheet(self, args: SpreadsheetArgs, call: Call) -> DocumentResult:
        file = f"{args.name}.xlsx"
        spec = args.model_dump(mode="json") | {"file": file}
        refs = await produce(
            self.capability,
            self,
            call,
            "spreadsheet",
            program=SPREADSHEET_PROGRAM,
            inputs={"spec.json": json.dumps(spec)},
            outputs=[file],
        )
        return DocumentResult(artifact=refs[0], sheets=[s.name for s in args.sheets])

    @tool("Write a PDF report: a title, then sections of paragraphs, bullets, a table and a chart each.")
    async def report(self, args: ReportArgs, call: Call) -> DocumentResult:
        inputs: dict[str, str | bytes] = {}
        for index, section in enumerate(args.sections):
            if section.image is None or f"image-{section.image}.png" in inputs:
                continue
            inputs[f"image-{section.image}.png"] = await self._image(call, section.image, index)
        file = f"{args.name}.pdf"
        inputs["spec.json"] = json.dumps(args.model_dump(mode="json") | {"file": file})
        refs = await produce(
            self.capability, self, call, "report", program=REPORT_PROGRAM, inputs=inputs, outputs=[file]
        )
        return DocumentResult(artifact=refs[0])

    async def _image(self, call: Call, artifact_id: str, index: int) -> bytes:
        """A PNG artifact of this conversation (read as the caller, who must be able to read it)."""
        field = f"sections.{index}.image"
        if call.conversation_id is None:
            raise ToolFailure("no_conversation", f"{field}: images come from a conversation; this call has none")
        try:
            ref, content = await fetch(self, call.conversation_id, artifact_id)
        except RemoteError as exc:
            raise ToolFailure(exc.error.code, f"{field}: {exc.error.message}") from None
        if ref.content_type != "image/png":
            raise ToolFailure("invalid_arguments", f"{field}: {ref.name} is {ref.content_type}, not a PNG image")
        return content
