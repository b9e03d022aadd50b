"""Rogers: every envelope that crosses the bus, stored in SQLite and kept forever."""

from mads.rogers.mad import Rogers

__all__ = ["Rogers"]
