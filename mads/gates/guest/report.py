# Gates's report writer: runs inside a WASM cell. Reads /input/spec.json (and /input/image-<id>.png
# for each section's chart), writes spec["file"] as a PDF.
import json
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

with open("/input/spec.json", encoding="utf-8") as handle:
    spec = json.load(handle)

styles = getSampleStyleSheet()
story = [Paragraph(escape(spec["title"]), styles["Title"])]
if spec.get("subtitle"):
    story.append(Paragraph(escape(spec["subtitle"]), styles["Heading3"]))
if spec.get("author"):
    story.append(Paragraph(escape(spec["author"]), styles["Italic"]))
story.append(Spacer(1, 0.5 * cm))
width = A4[0] - 4 * cm

for section in spec["sections"]:
    story.append(Paragraph(escape(section["heading"]), styles["Heading2"]))
    for text in section["paragraphs"]:
        story.append(Paragraph(escape(text), styles["BodyText"]))
    if section["bullets"]:
        items = [ListItem(Paragraph(escape(b), styles["BodyText"])) for b in section["bullets"]]
        story.append(ListFlowable(items, bulletType="bullet"))
    table = section.get("table")
    if table:
        cells = [[Paragraph(escape(str(c)), styles["BodyText"]) for c in table["columns"]]]
        cells += [
            [Paragraph(escape("" if v is None else str(v)), styles["BodyText"]) for v in row] for row in table["rows"]
        ]
        grid = Table(cells, repeatRows=1, colWidths=[width / len(table["columns"])] * len(table["columns"]))
        grid.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                    ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        story.append(Spacer(1, 0.2 * cm))
        story.append(grid)
    if section.get("image"):
        picture = Image(f"/input/image-{section['image']}.png")
        scale = min(1.0, width / picture.imageWidth)
        picture.drawWidth, picture.drawHeight = picture.imageWidth * scale, picture.imageHeight * scale
        story.append(Spacer(1, 0.2 * cm))
        story.append(picture)
    story.append(Spacer(1, 0.4 * cm))

pages = []
document = SimpleDocTemplate(spec["file"], pagesize=A4, title=spec["title"], author=spec.get("author") or "")
document.build(story, onLaterPages=lambda c, d: pages.append(d.page), onFirstPage=lambda c, d: pages.append(d.page))
print(json.dumps({"pages": len(pages)}))
