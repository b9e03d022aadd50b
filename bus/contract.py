"""What a subscriber accepts, checked by the bus before its handler runs.

A MAD declares the tools it offers (each with a pydantic argument model) and
whether it takes prose or data. The bus checks every delivered envelope against
that declaration and answers a mismatch with an error reply naming the field and
the reason, so handlers only ever see well-formed work.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from bus.envelope import (
    CommandPart,
    DataPart,
    Envelope,
    ErrorInfo,
    FieldError,
    Kind,
    ProsePart,
    validation_error,
)


class Contract:
    """The accepted shape of requests to one address."""

    __slots__ = ("accepts_data", "accepts_prose", "tools")

    def __init__(
        self,
        tools: Mapping[str, type[BaseModel]] | None = None,
        *,
        accepts_prose: bool = True,
        accepts_data: bool = False,
    ) -> None:
        self.tools: dict[str, type[BaseModel]] = dict(tools or {})
        self.accepts_prose = accepts_prose
        self.accepts_data = accepts_data

    def check(self, envelope: Envelope) -> ErrorInfo | None:
        """``None`` if acceptable, else an :class:`ErrorInfo` naming the bad field."""
        if envelope.kind in (Kind.REPLY, Kind.ERROR):
            return None
        for index, part in enumerate(envelope.content):
            where = f"content.{index}"
            if isinstance(part, CommandPart):
                model = self.tools.get(part.tool)
                if model is None:
                    known = ", ".join(sorted(self.tools)) or "none"
                    return ErrorInfo(
                        code="unknown_tool",
                        message=f"{envelope.recipient} has no tool {part.tool!r} (tools: {known})",
                        fields=[FieldError(field=f"{where}.tool", reason=f"unknown tool {part.tool!r}")],
                    )
                try:
                    model.model_validate(part.arguments)
                except ValidationError as exc:
                    return validation_error(exc, prefix=f"{where}.arguments", code="invalid_arguments")
            elif isinstance(part, ProsePart) and not self.accepts_prose:
                return _refused(where, envelope.recipient, "prose")
            elif isinstance(part, DataPart) and not self.accepts_data and envelope.kind is Kind.REQUEST:
                return _refused(where, envelope.recipient, "data")
        return None


def _refused(where: str, recipient: str, what: str) -> ErrorInfo:
    return ErrorInfo(
        code="part_not_accepted",
        message=f"{recipient} does not accept {what} parts",
        fields=[FieldError(field=f"{where}.type", reason=f"{what} not accepted by {recipient}")],
    )
