"""Guest program: runs INSIDE the WASM cell (CPython 3.15, stdlib only), never imported by the host.

Reads /input/page.html and /input/params.json ({"base_url", "selector", "max_text_chars", "max_links",
"max_selected"}) and prints one JSON object: {"title", "text", "links": [{"url", "text"}],
"selected": [{"tag", "id", "classes", "text"}] | null} or {"error": "..."} for a bad selector.

Selector subset: compound selectors made of an optional tag name or `*`, `#id` and any number of
`.class`, joined by whitespace (descendant combinator); several selectors separated by commas.
"""

import json
import re
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HIDDEN = {"script", "style", "noscript", "template", "head"}
BLOCK = {
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
    "title",
}
COMPOUND = re.compile(r"^(?P<tag>[A-Za-z][A-Za-z0-9-]*|\*)?(?P<rest>(?:[#.][A-Za-z0-9_-]+)*)$")


class Node:
    __slots__ = ("attrs", "children", "parent", "tag")

    def __init__(self, tag, attrs, parent):
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children = []


class TreeBuilder(HTMLParser):
    """Lenient tree: unknown end tags are ignored, unclosed tags are closed by their ancestors' end tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v or "") for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, {k: (v or "") for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_selector(text):
    groups = []
    for group in text.split(","):
        parts = group.split()
        if not parts:
            raise ValueError(f"empty selector in {text!r}")
        compounds = []
        for part in parts:
            match = COMPOUND.match(part)
            if not match or not part:
                raise ValueError(f"unsupported selector part {part!r} (supported: tag, *, #id, .class, descendant)")
            tag = (match.group("tag") or "*").lower()
            rest = match.group("rest")
            ids = re.findall(r"#([A-Za-z0-9_-]+)", rest)
            classes = re.findall(r"\.([A-Za-z0-9_-]+)", rest)
            compounds.append((tag, ids, classes))
        groups.append(compounds)
    return groups


def matches_compound(node, compound):
    tag, ids, classes = compound
    if tag != "*" and node.tag != tag:
        return False
    if any(node.attrs.get("id") != wanted for wanted in ids):
        return False
    node_classes = node.attrs.get("class", "").split()
    return all(cls in node_classes for cls in classes)


def matches(node, compounds):
    if not matches_compound(node, compounds[-1]):
        return False
    remaining = len(compounds) - 2
    ancestor = node.parent
    while remaining >= 0 and ancestor is not None:
        if ancestor.tag != "#root" and matches_compound(ancestor, compounds[remaining]):
            remaining -= 1
        ancestor = ancestor.parent
    return remaining < 0


def walk(node):
    pending = [node]
    while pending:
        current = pending.pop()
        yield current
        pending.extend(child for child in reversed(current.children) if isinstance(child, Node))


def text_of(node, parts):
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            parts.append(current)
        elif current is None:
            parts.append("\n")
        elif current.tag not in HIDDEN or current is node:
            block = current.tag in BLOCK
            if block:
                parts.append("\n")
                pending.append(None)
            pending.extend(reversed(current.children))
    return parts


def clean(text):
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def main():
    with open("/input/params.json", encoding="utf-8") as handle:
        params = json.load(handle)
    with open("/input/page.html", encoding="utf-8", errors="replace") as handle:
        raw = handle.read()
    selector = params.get("selector")
    groups = None
    if selector:
        try:
            groups = parse_selector(selector)
        except ValueError as exc:
            print(json.dumps({"error": f"selector: {exc}"}))
            return
    builder = TreeBuilder()
    builder.feed(raw)
    builder.close()
    root = builder.root
    max_text = params["max_text_chars"]

    title = ""
    body_nodes = []
    for node in walk(root):
        if node.tag == "title" and not title:
            title = clean("".join(text_of(node, [])))
        if node.tag == "body":
            body_nodes.append(node)

    text = clean("".join(text_of(body_nodes[0] if body_nodes else root, [])))[:max_text]

    base_url = params["base_url"]
    for node in walk(root):
        if node.tag == "base" and node.attrs.get("href"):
            base_url = urljoin(base_url, node.attrs["href"])
            break
    links, seen = [], set()
    for node in walk(root):
        href = node.attrs.get("href", "").strip() if node.tag == "a" else ""
        if not href or href.startswith("#"):
            continue
        url = urljoin(base_url, href)
        if urlsplit(url).scheme not in ("http", "https") or url in seen:
            continue
        seen.add(url)
        links.append({"url": url, "text": clean("".join(text_of(node, [])))[:500]})
        if len(links) >= params["max_links"]:
            break

    selected = None
    if groups is not None:
        selected = []
        for node in walk(root):
            if node.tag != "#root" and any(matches(node, compounds) for compounds in groups):
                selected.append(
                    {
                        "tag": node.tag,
                        "id": node.attrs.get("id"),
                        "classes": node.attrs.get("class", "").split(),
                        "text": clean("".join(text_of(node, [])))[:max_text],
                    }
                )
                if len(selected) >= params["max_selected"]:
                    break
    sys.stdout.write(json.dumps({"title": title, "text": text, "links": links, "selected": selected}))


if __name__ == "__main__":  # the cell runs this file as /code/main.py
    main()
