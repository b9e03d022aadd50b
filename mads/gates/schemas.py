"""Gates's boundary models: spreadsheets and reports as structured content, checked before a cell starts."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mads.core.artifacts import ArtifactRef
from mads.core.tables import MAX_COLUMNS, MAX_ROWS, Cell, ColumnName

FileStem = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$", description="file name, no extension")]
_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sheet(Strict):
    name: str = Field(min_length=1, max_length=31, description="Excel's rules: at most 31 characters, none of []:*?/\\")
    columns: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    rows: list[list[Cell]] = Field(default_factory=list, max_length=MAX_ROWS)

    @field_validator("name")
    @classmethod
    def _sheet_name(cls, value: str) -> str:
        if _SHEET_FORBIDDEN.search(value) or value.startswith("'") or value.endswith("'"):
            raise ValueError("a sheet name may not contain []:*?/\\ nor start or end with an apostrophe")
        return value

    @model_validator(mode="after")
    def _row_widths(self) -> Self:
        for index, row in enumerate(self.rows):
            if len(row) > len(self.columns):
                raise ValueError(f"rows.{index}: {len(row)} cells for {len(self.columns)} columns")
        return self


class SpreadsheetArgs(Strict):
    """A workbook: one or more sheets of a header row and data rows."""

    name: FileStem = "workbook"
    sheets: list[Sheet] = Field(min_length=1, max_length=16)
    formulas: bool = Field(
        default=False,
        description="treat text starting with '=' as a formula; off by default, so data can never inject one",
    )

    @model_validator(mode="after")
    def _unique_sheets(self) -> Self:
        seen: set[str] = set()
        for sheet in self.sheets:
            if sheet.name.lower() in seen:
                raise ValueError(f"sheets: two sheets are named {sheet.name!r}")
            seen.add(sheet.name.lower())
        return self


class ReportTable(Strict):
    columns: list[ColumnName] = Field(min_length=1, max_length=12)
    rows: list[list[Cell]] = Field(default_factory=list, max_length=2000)


class Section(Strict):
    heading: str = Field(min_length=1, max_length=200)
    paragraphs: list[Annotated[str, Field(max_length=10_000)]] = Field(default_factory=list, max_length=50)
    bullets: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=100)
    table: ReportTable | None = None
    image: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="id of a PNG artifact of this conversation (a chart from Playfair) to place in the section",
    )


class ReportArgs(Strict):
    """A PDF report: a title page heading, then sections of text, bullets, a table and a chart each."""

    name: FileStem = "report"
    title: str = Field(min_length=1, max_length=200)
    subtitle: str | None = Field(default=None, max_length=300)
    author: str | None = Field(default=None, max_length=100)
    sections: list[Section] = Field(min_length=1, max_length=50)


class DocumentResult(BaseModel):
    """The file, attached to the conversation."""

    artifact: ArtifactRef
    pages: int | None = None
    sheets: list[str] | None = None
