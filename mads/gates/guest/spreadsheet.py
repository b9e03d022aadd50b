# Gates's spreadsheet writer: runs inside a WASM cell. Reads /input/spec.json, writes spec["file"].
import json

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

with open("/input/spec.json", encoding="utf-8") as handle:
    spec = json.load(handle)

book = Workbook()
book.remove(book.active)
for sheet in spec["sheets"]:
    ws = book.create_sheet(sheet["name"])
    ws.append(sheet["columns"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    widths = [len(str(c)) for c in sheet["columns"]]
    for row in sheet["rows"]:
        ws.append(row)
        for index, value in enumerate(row):
            widths[index] = max(widths[index], min(len(str(value)), 60))
    if not spec["formulas"]:
        # Text that looks like a formula stays text: data never becomes code in someone's spreadsheet.
        for cells in ws.iter_rows(min_row=2):
            for cell in cells:
                if cell.data_type == "f":
                    cell.data_type = "s"
    ws.freeze_panes = "A2"
    if sheet["rows"]:
        ws.auto_filter.ref = ws.dimensions
    for index, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(index)].width = width + 2
book.properties.creator = "mad-ecosystem (gates)"
book.save(spec["file"])
print(json.dumps({"sheets": [s["name"] for s in spec["sheets"]]}))
