"""HTML extraction runs inside the cell (lxml, soupsieve); the host only accepts validated JSON."""

import pytest
from pydantic import ValidationError

from sandbox import HtmlExtractionError, RunLimits, Sandbox

PAGE = """<!doctype html><html><head><title> Demo  page </title><base href="/docs/">
<style>.x{color:red}</style><script>var secret = 1;</script></head>
<body><nav><a href="index.html">Home</a> <a href="https://other.org/x?y=1">Other</a>
<a href="javascript:alert(1)">bad</a> <a href="#top">top</a> <a href="mailto:a@b.c">mail</a></nav>
<div id="main" class="content wide"><h1>Heading</h1><p class="lead">First <b>para</b>.</p>
<p>Second para &amp; more</p><div class="note"><p>Nested note</p></div></div>
<p class="lead">Outside</p></body></html>"""


async def test_title_text_and_links(sandbox: Sandbox) -> None:
    page = await sandbox.extract_html(PAGE, "https://example.com/start/page.html")
    assert page.title == "Demo page"
    assert "Heading\nFirst para.\nSecond para & more\nNested note\nOutside" in page.text
    assert "secret" not in page.text and "color" not in page.text
    assert [link.url for link in page.links] == ["https://example.com/docs/index.html", "https://other.org/x?y=1"]
    assert page.links[0].text == "Home"
    assert page.selected is None


@pytest.mark.parametrize(
    ("selector", "texts"),
    [
        ("p.lead", ["First para.", "Outside"]),
        ("#main p", ["First para.", "Second para & more", "Nested note"]),
        ("div.content .note p", ["Nested note"]),
        ("div.content.wide > p", ["First para.", "Second para & more"]),
        ("p:not(.lead)", ["Second para & more", "Nested note"]),
        ("a[href^='https']", ["Other"]),
        ("p[", None),
        ("h1, .note", ["Heading", "Nested note"]),
        ("*#main h1", ["Heading"]),
        ("table", []),
    ],
)
async def test_css_selectors(sandbox: Sandbox, selector: str, texts: list[str] | None) -> None:
    if texts is None:
        with pytest.raises(ValidationError, match="selector"):
            await sandbox.extract_html(PAGE, "https://example.com/", selector)
        return
    page = await sandbox.extract_html(PAGE, "https://example.com/", selector)
    assert page.selected is not None
    assert [element.text for element in page.selected] == texts


@pytest.mark.parametrize(
    "html",
    [
        "<div><p>unclosed <b>bold <i>italic</div></span></p>tail",
        "<<<>>><a href='x'<p>text</a>&#xZZ; &bogus; <!-- unterminated",
        "\x00\ufffd<p>nul</p>" + "<div>" * 3000 + "deep" + "</div>" * 10,
        "",
    ],
)
async def test_malformed_html_still_gives_a_result(sandbox: Sandbox, html: str) -> None:
    page = await sandbox.extract_html(html, "https://example.com/", "p")
    assert isinstance(page.text, str)
    assert page.selected is not None


async def test_bad_base_url_is_rejected(sandbox: Sandbox) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        await sandbox.extract_html(PAGE, "file:///etc/passwd")


async def test_oversized_html_is_rejected_before_running(sandbox: Sandbox) -> None:
    with pytest.raises(ValidationError, match="input_files"):
        await sandbox.extract_html("x" * (17 << 20), "https://example.com/")


async def test_extraction_that_hits_a_limit_is_a_clear_error(sandbox: Sandbox) -> None:
    html = "<div class='a'>" * 20000 + "<p>x</p>"
    with pytest.raises(HtmlExtractionError, match="limit_hit="):
        await sandbox.extract_html(html, "https://example.com/", "div.a div.a p", limits=RunLimits(fuel=400_000_000))


async def test_a_megabyte_page_of_a_hundred_thousand_tags_is_extracted_within_the_default_deadline(
    sandbox: Sandbox,
) -> None:
    rows = "".join(f"<tr><td class='n'>{i}</td><td><a href='/r/{i}'>row {i}</a></td></tr>" for i in range(20_000))
    html = f"<html><head><title>Big</title></head><body><table>{rows}</table></body></html>"
    assert len(html) > 1_000_000 and html.count("<") > 100_000
    # Marco's limits: the defaults (a 5 s deadline), with output up to the ceiling (1 MiB of JSON).
    page = await sandbox.extract_html(html, "https://example.com/", limits=RunLimits(output_bytes=1 << 20))
    assert page.title == "Big" and page.text.startswith("0\nrow 0\n1\nrow 1")
    assert len(page.links) == 500 and page.links[0].url == "https://example.com/r/0"
