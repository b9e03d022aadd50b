"""Tables as MADs pass them to each other: typed, bounded, and validated before any work is done.

A chart (Playfair) or a spreadsheet and a report (Gates) are made from a table the caller gives
inline (rows of objects, or named columns) or as CSV text. :class:`TableInput` checks the shape
and the size here, at the boundary, so a malformed table is refused naming the field, before a
sandbox cell starts.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_ROWS = 20_000
MAX_COLUMNS = 64
MAX_CSV_CHARS = 4_000_000

Cell = str | int | float | bool | None
ColumnName = Annotated[str, Field(min_length=1, max_length=100)]


class TableInput(BaseModel):
    """Exactly one of ``rows``, ``columns`` or ``csv``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: list[dict[ColumnName, Cell]] | None = Field(
        default=None, max_length=MAX_ROWS, description='records, e.g. [{"year": 2024, "yield": 3.1}, ...]'
    )
    columns: dict[ColumnName, list[Cell]] | None = Field(
        default=None, max_length=MAX_COLUMNS, description='named columns of equal length, e.g. {"year": [...]}'
    )
    csv: str | None = Field(
        default=None, max_length=MAX_CSV_CHARS, description="CSV text with a header row (as run_python may print)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("rows", "columns", "csv") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rows, columns or csv (got {', '.join(given) or 'none'})")
        if self.columns is not None:
            lengths = {len(values) for values in self.columns.values()}
            if len(lengths) > 1:
                raise ValueError(f"columns must have equal lengths (got {sorted(lengths)})")
            if lengths and next(iter(lengths)) > MAX_ROWS:
                raise ValueError(f"at most {MAX_ROWS} rows")
        if self.rows is not None and any(len(row) > MAX_COLUMNS for row in self.rows):
            raise ValueError(f"at most {MAX_COLUMNS} columns per row")
        if self.csv is not None:
            header = self.header()
            if not header:
                raise ValueError("csv has no header row")
            if len(header) > MAX_COLUMNS:
                raise ValueError(f"at most {MAX_COLUMNS} columns")
        return self

    def header(self) -> list[str]:
        """The column names, in order."""
        if self.columns is not None:
            return list(self.columns)
        if self.rows is not None:
            names: dict[str, None] = {}
            for row in self.rows:
                names.update(dict.fromkeys(row))
            return list(names)
        first = next(csv.reader(io.StringIO(self.csv or "")), [])
        return [name.strip() for name in first]

    def to_csv(self) -> str:
        """The table as CSV text with a header row (what the cell reads)."""
        if self.csv is not None:
            return self.csv
        header = self.header()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        if self.columns is not None:
            writer.writerows(zip(*(self.columns[name] for name in header), strict=True))
        else:
            writer.writerows([row.get(name) for name in header] for row in self.rows or [])
        return out.getvalue()
