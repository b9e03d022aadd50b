"""Playfair's boundary models: what a chart request may say, checked before a cell starts."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mads.core.artifacts import ArtifactRef
from mads.core.tables import ColumnName, TableInput

ChartKind = Literal["line", "bar", "barh", "scatter", "area", "hist", "box", "pie", "heatmap"]
NEEDS_Y: frozenset[str] = frozenset({"line", "bar", "barh", "scatter", "area", "pie"})


class ChartArgs(BaseModel):
    """A chart of a table: which kind, which columns, how it looks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ChartKind = Field(description="line, bar, barh, scatter, area, hist, box, pie or heatmap (correlations)")
    data: TableInput = Field(description="the table: rows, columns or csv")
    x: ColumnName | None = Field(default=None, description="column on the x axis (labels for bar and pie)")
    y: list[ColumnName] = Field(
        default_factory=list,
        max_length=12,
        description="column(s) plotted; hist, box and heatmap default to all numeric",
    )
    hue: ColumnName | None = Field(default=None, description="column whose values colour the points (scatter)")
    title: str | None = Field(default=None, max_length=200)
    xlabel: str | None = Field(default=None, max_length=100)
    ylabel: str | None = Field(default=None, max_length=100)
    format: Literal["png", "svg"] = "png"
    width: float = Field(default=8.0, ge=2, le=20, description="inches")
    height: float = Field(default=4.5, ge=2, le=20, description="inches")
    dpi: int = Field(default=120, ge=50, le=300)
    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$", description="file name without extension"
    )

    @model_validator(mode="after")
    def _columns_exist(self) -> Self:
        header = self.data.header()
        for field, column in [("x", self.x), ("hue", self.hue), *(("y", c) for c in self.y)]:
            if column is not None and column not in header:
                raise ValueError(f"{field}: no column {column!r} in the data (columns: {', '.join(header)})")
        if self.kind in NEEDS_Y and not self.y:
            raise ValueError(f"y: a {self.kind} chart needs at least one y column")
        if self.kind == "scatter" and self.x is None:
            raise ValueError("x: a scatter chart needs an x column")
        return self

    def file_name(self) -> str:
        return f"{self.name or self.kind + '-chart'}.{self.format}"


class ChartResult(BaseModel):
    """The chart, attached to the conversation."""

    artifact: ArtifactRef
    kind: str
    columns: list[str]
