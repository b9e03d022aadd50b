"""Gates, the document writer: spreadsheets (xlsx) and PDF reports from structured content, written in a cell."""

from mads.gates.mad import Gates

__all__ = ["Gates"]
