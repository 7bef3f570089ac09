"""Product searches, labelled or not: our JSONL layout and the Amazon ESCI layout, read into one shape.

JSONL, one search a line (``query_id`` optional; each candidate's ``id`` optional, ``label`` an integer
grade, every other field is the product as sent to the endpoint, in the order the shop's engine gave)::

    {"query_id": "q1", "query": "...", "candidates": [{"id": "p1", "label": 3, "title": "...", "ctr": 0.04}]}

A query log has no labels: every candidate without ``label`` (a file labels all of them or none). It may
also be the rerank requests as logged, ``documents`` for ``candidates`` and plain strings for products::

    {"query": "...", "documents": ["2-person tent, 1.6 kg", {"text": "Camping mug", "brand": "Stanley"}]}

ESCI (Reddy et al. 2022): ``shopping_queries_dataset_examples`` (one row per query and product: ``query``,
``query_id``, ``product_id``, ``product_locale``, ``esci_label``, ``small_version``, ``split``) as parquet,
CSV or JSONL, joined on (``product_locale``, ``product_id``) with ``shopping_queries_dataset_products``
for the product text. Labels E/S/C/I become 3/2/1/0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

SMOKE = "smoke"  # the name that stands for the packaged smoke set (gateway/eval/data/smoke.jsonl)
ESCI_LABELS = {"E": 3, "S": 2, "C": 1, "I": 0}  # exact, substitute, complement, irrelevant
ESCI_TEXT = ("product_title", "product_brand", "product_color", "product_bullet_point", "product_description")
ESCI_RANK_FIELDS = ("product_title", "product_brand", "product_color")
RESERVED = ("id", "label")  # candidate keys that are ours, not the product's
LISTS = ("candidates", "documents")  # our name for a search's products, and the rerank request's


class DatasetError(ValueError):
    """The labelled set cannot be read; the message says where and what to fix."""


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    label: int | None  # None in a query log (no labels): only the agreement gate can use it
    document: dict[str, Any]  # what the endpoint receives


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    id: str
    query: str
    candidates: tuple[Candidate, ...]  # in the order given: the baseline

    def labels(self) -> dict[str, int]:
        return {c.id: c.label for c in self.candidates if c.label is not None}


@dataclass(frozen=True, slots=True)
class LabelledSet:
    name: str
    queries: tuple[LabelledQuery, ...]
    rank_fields: tuple[str, ...] | None  # what to rank on when the command line names none

    def limited(self, limit: int | None) -> LabelledSet:
        return self if limit is None else LabelledSet(self.name, self.queries[:limit], self.rank_fields)

    @property
    def labelled(self) -> bool:
        """Readers accept every candidate labelled or none, so the first one tells."""
        return self.queries[0].candidates[0].label is not None

    @property
    def max_label(self) -> int:
        return max((c.label for q in self.queries for c in q.candidates if c.label is not None), default=0)


def smoke_path() -> Path:
    return Path(str(files("gateway.eval") / "data" / "smoke.jsonl"))


def load(
    source: str,
    *,
    layout: str = "auto",
    products: Path | None = None,
    split: str | None = None,
    version: str | None = None,
    locale: str | None = None,
) -> LabelledSet:
    """Read ``source`` (a path, or ``smoke``); ``layout`` is ``jsonl``, ``esci`` or ``auto`` (ESCI when
    the file is parquet or CSV, or its rows carry ``esci_label``)."""
    path = smoke_path() if source == SMOKE else Path(source)
    if not path.is_file():
        raise DatasetError(f"{source}: no such file")
    if layout == "auto":
        layout = (
            "esci" if path.suffix.lower() in {".parquet", ".csv", ".tsv"} or _esci_rows(path) else "jsonl"
        )
    if layout == "esci":
        return read_esci(path, products=products, split=split, version=version, locale=locale)
    if products is not None or split or version or locale:
        raise DatasetError(
            "--esci-products, --esci-split, --esci-version and --esci-locale are for ESCI data"
        )
    return read_jsonl(path, name=SMOKE if source == SMOKE else path.stem)


def _esci_rows(path: Path) -> bool:
    with path.open(encoding="utf-8") as lines:
        first = next((line for line in lines if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "esci_label" in row


def read_jsonl(path: Path, *, name: str) -> LabelledSet:
    queries: list[LabelledQuery] = []
    seen: set[str] = set()
    labelled: bool | None = None  # what the first search says: labels everywhere, or a query log
    for number, line in _lines(path):
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not JSON ({exc.msg})") from None
        query = _query(row, where, default_id=f"q{len(queries) + 1}", labelled=labelled)
        if query.id in seen:
            raise DatasetError(f"{where}: query_id '{query.id}' appears twice")
        labelled = query.candidates[0].label is not None
        seen.add(query.id)
        queries.append(query)
    if not queries:
        raise DatasetError(f"{path.name}: no searches in it")
    return LabelledSet(name, tuple(queries), _common_text_fields(queries))


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line


def _query(row: Any, where: str, *, default_id: str, labelled: bool | None) -> LabelledQuery:
    """One search; ``labelled`` is what the searches before it said (None for the first): a file labels
    every candidate or none, since half a labelling would measure NDCG on some products and not others."""
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object with query and candidates")
    present = [key for key in LISTS if key in row]
    if len(present) > 1:
        raise DatasetError(f"{where}: give 'candidates' or 'documents', not both")
    lists = present[0] if present else LISTS[0]
    query, candidates = row.get("query"), row.get(lists)
    if not isinstance(query, str) or not query.strip():
        raise DatasetError(f"{where}: 'query' must be a non-empty string")
    if not isinstance(candidates, list) or not candidates:
        raise DatasetError(f"{where}: '{lists}' must be a non-empty list of products")
    query_id = str(row.get("query_id", default_id))
    parsed: list[Candidate] = []
    for i, item in enumerate(candidates):
        at = f"{where}: {lists}[{i}]"
        if isinstance(item, str):  # a logged request's plain-text document, as the API takes it
            item = {"text": item}  # noqa: PLW2901
        if not isinstance(item, dict):
            raise DatasetError(f"{at} must be an object with the product's fields, or a string")
        label = item.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
            raise DatasetError(f"{at}: 'label' must be a whole number from 0 (irrelevant) up")
        if labelled is None:
            labelled = label is not None
        if (label is not None) != labelled:
            raise DatasetError(
                f"{at} {'has no' if labelled else 'has a'} label unlike the products before it: "
                "label every candidate, or none (a query log)"
            )
        document = {key: value for key, value in item.items() if key not in RESERVED}
        if not document:
            raise DatasetError(f"{at} has no product fields besides id and label")
        parsed.append(Candidate(str(item.get("id", i)), label, document))
    if len({c.id for c in parsed}) != len(parsed):
        raise DatasetError(f"{where}: candidate ids repeat")
    return LabelledQuery(query_id, query, tuple(parsed))


def _common_text_fields(queries: Sequence[LabelledQuery]) -> tuple[str, ...] | None:
    """Without ``text``, rank on the string fields every product has, in their order (title, brand, ...)."""
    documents = [c.document for q in queries for c in q.candidates]
    if all(isinstance(doc.get("text"), str) for doc in documents):
        return None
    return (
        tuple(key for key, value in documents[0].items() if isinstance(value, str) and key != "text") or None
    )


def read_esci(
    examples: Path,
    *,
    products: Path | None = None,
    split: str | None = None,
    version: str | None = None,
    locale: str | None = None,
) -> LabelledSet:
    """ESCI examples (optionally joined with its products table), grouped by query in file order."""
    table = _table(examples)
    missing = [column for column in ("query", "product_id", "esci_label") if column not in table.columns]
    if missing:
        raise DatasetError(f"{examples.name} lacks ESCI column(s) {', '.join(missing)}")
    for column, wanted in (("split", split), ("product_locale", locale)):
        if wanted is not None:
            if column not in table.columns:
                raise DatasetError(f"{examples.name} has no '{column}' column to filter on")
            table = table[table[column] == wanted]
    if version is not None:
        column = f"{version}_version"
        if column not in table.columns:
            raise DatasetError(f"{examples.name} has no '{column}' column (versions: small, large)")
        table = table[table[column].astype(str) == "1"]  # 1 in the parquet file, "1" in a CSV
    if products is not None:
        catalogue = _table(products)
        keys = [k for k in ("product_locale", "product_id") if k in table.columns and k in catalogue.columns]
        text = [column for column in ESCI_TEXT if column in catalogue.columns]
        table = table.drop(columns=[c for c in text if c in table.columns]).merge(
            catalogue[[*keys, *text]].drop_duplicates(keys), how="left", on=keys
        )
    text = [column for column in ESCI_TEXT if column in table.columns]
    if "product_title" not in text:
        raise DatasetError(
            f"{examples.name} has no product text: "
            "pass --esci-products shopping_queries_dataset_products.parquet"
        )
    unknown = sorted(set(table["esci_label"]) - set(ESCI_LABELS))
    if unknown:
        raise DatasetError(f"{examples.name}: esci_label must be E, S, C or I, not {unknown[0]!r}")
    group = "query_id" if "query_id" in table.columns else "query"
    queries: list[LabelledQuery] = []
    for query_id, rows in table.groupby(group, sort=False):
        candidates: dict[str, Candidate] = {}
        for row in rows.itertuples(index=False):
            fields = row._asdict()
            product_id = str(fields["product_id"])
            document = {column: _text(fields[column]) for column in text}
            candidates.setdefault(
                product_id, Candidate(product_id, ESCI_LABELS[fields["esci_label"]], document)
            )
        queries.append(LabelledQuery(str(query_id), str(rows["query"].iloc[0]), tuple(candidates.values())))
    if not queries:
        raise DatasetError(f"{examples.name}: no rows left after the split, version and locale filters")
    rank_fields = tuple(column for column in ESCI_RANK_FIELDS if column in text)
    return LabelledSet(examples.stem, tuple(queries), rank_fields)


def _table(path: Path) -> Any:
    import pandas as pd  # noqa: PLC0415  # only ESCI needs it; it takes a second to import

    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in {".csv", ".tsv"}:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        return pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path.name}: cannot read it ({exc})") from None


def _text(value: Any) -> str:
    """ESCI leaves many brands, colours and descriptions empty: an empty string keeps rank_fields valid."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
