"""Playfair, the chart maker: a table and a chart request in, a PNG or SVG attached to the conversation out.

The drawing runs inside a sandbox cell (matplotlib and seaborn in the cell's Python), because the
data is the caller's and so not trusted: a table crafted to exhaust memory or time hits the cell's
limits, not the host's. The request itself is validated first (columns that exist, a y for the
kinds that need one), so a wrong request is refused naming the field before any cell starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mads.core import names
from mads.core.base import MAD, ToolFailure
from mads.core.sandbox_capability import produce
from mads.core.tools import Call, tool
from mads.playfair.schemas import ChartArgs, ChartResult

if TYPE_CHECKING:
    from mads.core.sandbox_capability import SandboxCapability

PROGRAM = Path(__file__).with_name("guest").joinpath("chart.py").read_text(encoding="utf-8")


class Playfair(MAD):
    name = names.PLAYFAIR
    description = (
        "The chart maker: draws line, bar, scatter, area, histogram, box, pie and heatmap charts of a table "
        "(PNG or SVG) and attaches them to the conversation."
    )
    role_prompt = (
        "You make charts. Call chart with the table (rows, columns or csv), the kind and the columns to plot; "
        "the chart is shown to the person with your answer, so describe what it shows in a sentence or two."
    )
    uses_sandbox: ClassVar[bool] = True
    """Every chart is drawn inside a cell."""

    @property
    def capability(self) -> SandboxCapability | None:
        return self.ctx.capabilities.get("sandbox")

    @tool("Draw a chart of a table and attach it (PNG or SVG) to the conversation.")
    async def chart(self, args: ChartArgs, call: Call) -> ChartResult:
        capability = self.capability
        if capability is None:
            raise ToolFailure("sandbox_unavailable", "Playfair draws in the sandbox and this process has none")
        file = args.file_name()
        spec = args.model_dump(mode="json", exclude={"data"}) | {"file": file}
        refs = await produce(
            capability,
            self,
            call,
            "chart",
            program=PROGRAM,
            inputs={"spec.json": json.dumps(spec), "data.csv": args.data.to_csv()},
            outputs=[file],
        )
        return ChartResult(artifact=refs[0], kind=args.kind, columns=args.data.header())
