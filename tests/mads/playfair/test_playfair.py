"""Playfair through the gateway: a chart request in, a real PNG or SVG drawn by matplotlib in the cell out,
attached to the conversation and served to its owner; bad requests refused naming the field."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.support.ecosystem import Running

YIELDS = {"rows": [{"year": 2021 + i, "wheat": 3.0 + i * 0.2, "barley": 2.5 + (i % 3) * 0.3} for i in range(6)]}


def chart(arguments: dict[str, Any]) -> str:
    return f"/playfair chart {json.dumps(arguments)}"


async def fetch(eco: Running, path: str) -> tuple[int, dict[str, str], bytes]:
    async with eco.http.get(eco.at(path)) as response:
        return response.status, dict(response.headers), await response.read()


def png_size(content: bytes) -> tuple[int, int]:
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and content[12:16] == b"IHDR"
    return struct.unpack(">II", content[16:24])


async def test_a_line_chart_is_a_png_of_the_asked_size_shown_in_the_reply(playfair: Running) -> None:
    cid = await playfair.new_conversation("charts")
    request = {"kind": "line", "data": YIELDS, "x": "year", "y": ["wheat", "barley"], "title": "Yields"}
    body = await playfair.say(cid, chart({**request, "width": 6, "height": 3, "dpi": 100}))
    assert body["reply"]["error"] is None, body
    [artifact] = body["reply"]["artifacts"]
    assert artifact["name"] == "line-chart.png" and artifact["content_type"] == "image/png"
    status, headers, content = await fetch(playfair, f"/api/conversations/{cid}/artifacts/{artifact['id']}")
    assert status == 200 and headers["Content-Disposition"].startswith("inline")
    assert png_size(content) == (600, 300)
    assert len(content) > 5_000  # a drawn chart, not an empty canvas


@pytest.mark.parametrize("kind", ["bar", "scatter", "hist", "box", "pie", "heatmap", "area", "barh"])
async def test_every_kind_draws(playfair: Running, kind: str) -> None:
    cid = await playfair.new_conversation(kind)
    request: dict[str, Any] = {"kind": kind, "data": YIELDS, "name": f"k-{kind}"}
    if kind in {"bar", "barh", "area", "pie", "scatter"}:
        request |= {"x": "year", "y": ["wheat"]}
    body = await playfair.say(cid, chart(request))
    assert body["reply"]["error"] is None, body
    [artifact] = body["reply"]["artifacts"]
    status, _, content = await fetch(playfair, f"/api/conversations/{cid}/artifacts/{artifact['id']}")
    assert status == 200 and png_size(content)[0] > 0


async def test_an_svg_chart_from_csv_is_inert_xml(playfair: Running) -> None:
    cid = await playfair.new_conversation("svg")
    csv_text = "dose,response\n1,0.1\n2,0.4\n4,0.7\n8,0.9\n"
    body = await playfair.say(
        cid, chart({"kind": "scatter", "data": {"csv": csv_text}, "x": "dose", "y": ["response"], "format": "svg"})
    )
    [artifact] = body["reply"]["artifacts"]
    assert artifact["content_type"] == "image/svg+xml"
    status, headers, content = await fetch(playfair, f"/api/conversations/{cid}/artifacts/{artifact['id']}")
    assert status == 200 and ET.fromstring(content).tag.endswith("svg")
    assert "sandbox" in headers["Content-Security-Policy"] and b"<script" not in content


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"kind": "line", "data": YIELDS, "x": "year", "y": ["rye"]}, "rye"),
        ({"kind": "bar", "data": YIELDS, "x": "year"}, "y"),
        ({"kind": "line", "data": {"rows": YIELDS["rows"], "csv": "a\n1\n"}, "y": ["wheat"]}, "exactly one"),
        ({"kind": "donut", "data": YIELDS, "y": ["wheat"]}, "kind"),
        ({"kind": "line", "data": {"columns": {"a": [1, 2], "b": [1]}}, "y": ["a"]}, "equal lengths"),
    ],
)
async def test_bad_requests_are_refused_naming_the_problem_before_a_cell_starts(
    playfair: Running, arguments: dict[str, Any], named: str
) -> None:
    cid = await playfair.new_conversation("bad")
    body = await playfair.say(cid, chart(arguments))
    error = body["reply"]["error"]
    assert error["code"] == "invalid_arguments", body
    assert named in json.dumps(error)
    assert body["reply"]["artifacts"] == []
    assert playfair.host.sandbox.sandbox.active_runs == 0
