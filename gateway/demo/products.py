"""The products box: one product per line, or a CSV / JSON list of product objects."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Format(StrEnum):
    LINES = "One product per line"
    CSV = "CSV (header row)"
    JSON = "JSON list of objects"


class ProductsError(ValueError):
    """The products cannot be read; the message is a sentence for the page."""


@dataclass(frozen=True)
class Products:
    documents: list[str] | list[dict[str, Any]]
    columns: list[str]  # fields of the objects in first-seen order; empty for plain lines

    def label(self, index: int, rank_fields: list[str]) -> str:
        """How one product reads in the results: its text, or the values of the fields it was ranked on."""
        doc = self.documents[index]
        if isinstance(doc, str):
            return doc
        fields = rank_fields or (["text"] if "text" in doc else self.columns[:1])
        return " · ".join(_cell(doc[field]) for field in fields if field in doc)


def parse(text: str, fmt: Format) -> Products:
    if not text.strip():
        raise ProductsError("Add at least one product.")
    if fmt is Format.LINES:
        return Products([line.strip() for line in text.splitlines() if line.strip()], [])
    if fmt is Format.CSV:
        return _objects(_csv_rows(text))
    return _objects(_json_rows(text))


def columns_of(text: str, fmt: Format) -> list[str]:
    """The fields the page offers for ranking; none while the products are lines or cannot be read yet."""
    if fmt is Format.LINES:
        return []
    try:
        return parse(text, fmt).columns
    except ProductsError:
        return []


def _csv_rows(text: str) -> list[dict[str, Any]]:
    lines = text.strip().splitlines()
    # Spreadsheets export commas, tabs or (in much of Europe) semicolons; the header line tells which.
    delimiter = max(",\t;", key=lines[0].count)
    reader = csv.DictReader(io.StringIO("\n".join(lines)), delimiter=delimiter, restkey="\0extra")
    header = [name.strip() for name in reader.fieldnames or []]
    if not header or any(not name for name in header):
        raise ProductsError("The CSV's first line must name every column, e.g. title,brand,category,price.")
    if len(set(header)) != len(header):
        raise ProductsError("The CSV's header names a column twice.")
    rows = []
    for number, row in enumerate(reader, start=2):
        if "\0extra" in row:
            raise ProductsError(f"Line {number} of the CSV has more cells than the header has columns.")
        cells = {name.strip(): (value or "").strip() for name, value in row.items()}
        if any(cells.values()):
            rows.append(cells)
    if not rows:
        raise ProductsError("The CSV has a header but no products below it.")
    return rows


def _json_rows(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProductsError(f"The JSON does not parse (line {exc.lineno}, column {exc.colno}).") from None
    if not isinstance(data, list) or not data:
        raise ProductsError('The JSON must be a list of product objects: [{"title": "...", ...}, ...].')
    if not all(isinstance(item, dict) for item in data):
        raise ProductsError("Every item of the JSON list must be an object with the product's fields.")
    return data


def _objects(rows: list[dict[str, Any]]) -> Products:
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return Products(rows, columns)


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
