"""Gates through the gateway: spreadsheets and PDF reports written in the cell, opened on the host with real
readers (openpyxl, pypdf); formulas in data stay text; bad requests refused naming the field."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from tests.support.ecosystem import Running


def command(tool: str, arguments: dict[str, Any], mad: str = "gates") -> str:
    return f"/{mad} {tool} {json.dumps(arguments)}"


async def download(eco: Running, cid: str, artifact: dict[str, Any]) -> bytes:
    async with eco.http.get(eco.at(f"/api/conversations/{cid}/artifacts/{artifact['id']}")) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment;")
        return await response.read()


async def test_a_spreadsheet_opens_with_its_sheets_values_and_no_injected_formula(gates: Running) -> None:
    cid = await gates.new_conversation("sheets")
    sheets = [
        {"name": "Yields", "columns": ["year", "wheat", "note"], "rows": [[2024, 3.1, "ok"], [2025, 3.4, None]]},
        {"name": "Notes", "columns": ["text"], "rows": [['=HYPERLINK("http://evil.example","click")'], ["plain"]]},
    ]
    body = await gates.say(cid, command("spreadsheet", {"name": "harvest", "sheets": sheets}))
    assert body["reply"]["error"] is None, body
    [artifact] = body["reply"]["artifacts"]
    assert artifact["name"] == "harvest.xlsx"
    assert artifact["content_type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = load_workbook(io.BytesIO(await download(gates, cid, artifact)))
    assert book.sheetnames == ["Yields", "Notes"]
    rows = list(book["Yields"].iter_rows(values_only=True))
    assert rows == [("year", "wheat", "note"), (2024, 3.1, "ok"), (2025, 3.4, None)]
    injected = book["Notes"]["A2"]
    assert injected.data_type == "s" and injected.value.startswith("=HYPERLINK")


async def test_a_report_with_a_table_and_a_chart_opens_as_a_pdf(gates: Running) -> None:
    cid = await gates.new_conversation("report")
    data = {"columns": {"month": ["Jan", "Feb", "Mar"], "samples": [12, 18, 9]}}
    drawn = await gates.say(
        cid, command("chart", {"kind": "bar", "data": data, "x": "month", "y": ["samples"]}, mad="playfair")
    )
    [chart] = drawn["reply"]["artifacts"]
    report = {
        "name": "q1",
        "title": "Quarterly samples",
        "author": "The lab",
        "sections": [
            {
                "heading": "Summary",
                "paragraphs": ["Samples rose in February & fell in March <b>."],
                "bullets": ["39 total"],
            },
            {
                "heading": "Data",
                "table": {"columns": ["month", "samples"], "rows": [["Jan", 12], ["Feb", 18], ["Mar", 9]]},
            },
            {"heading": "Chart", "image": chart["id"]},
        ],
    }
    body = await gates.say(cid, command("report", report))
    assert body["reply"]["error"] is None, body
    [artifact] = body["reply"]["artifacts"]
    assert artifact["name"] == "q1.pdf" and artifact["content_type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(await download(gates, cid, artifact)))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Quarterly samples" in text and "Samples rose in February & fell in March <b>." in text
    assert "Feb" in text and "18" in text
    assert reader.metadata.title == "Quarterly samples"
    assert any(page.images for page in reader.pages)  # the chart is in it


async def test_an_image_from_another_persons_conversation_is_not_found(gates: Running) -> None:
    cid = await gates.new_conversation("mine")
    drawn = await gates.say(
        cid, command("chart", {"kind": "hist", "data": {"columns": {"v": [1, 2, 2, 3]}}}, mad="playfair")
    )
    [chart] = drawn["reply"]["artifacts"]
    async with gates.signed_in_as("mallory") as mallory:
        theirs = await mallory.new_conversation("theirs")
        report = {"title": "Stolen", "sections": [{"heading": "x", "image": chart["id"]}]}
        body = await mallory.say(theirs, command("report", report))
    error = body["reply"]["error"]
    assert error["code"] == "not_found" and "sections.0.image" in error["message"]


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("spreadsheet", {"sheets": [{"name": "a/b", "columns": ["x"]}]}, "sheets.0.name"),
        ("spreadsheet", {"sheets": [{"name": "A", "columns": ["x"], "rows": [[1, 2]]}]}, "2 cells for 1 columns"),
        ("spreadsheet", {"sheets": []}, "sheets"),
        ("report", {"title": "t", "sections": [{"heading": "h", "image": "not-an-id"}]}, "sections.0.image"),
        ("report", {"sections": [{"heading": "h"}]}, "title"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    gates: Running, tool: str, arguments: dict[str, Any], named: str
) -> None:
    cid = await gates.new_conversation("bad")
    body = await gates.say(cid, command(tool, arguments))
    error = body["reply"]["error"]
    assert error["code"] == "invalid_arguments", body
    assert named in json.dumps(error)
