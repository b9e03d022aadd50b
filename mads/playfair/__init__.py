"""Playfair, the chart maker: turns a table and a chart request into a PNG or SVG drawn in a WASM cell."""

from mads.playfair.mad import Playfair

__all__ = ["Playfair"]
