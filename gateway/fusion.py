"""Score fusion (API extension): blend the model's score with numeric shop signals of v1 object documents.

    fused = (1 - sum(w)) * N(relevance_score) + sum(w_f * N(document[f]))

over the request's documents, with N min-max scaling to [0, 1] (``"minmax"``, ranx's weighted-sum
fusion with its min-max normalisation) or the values as sent (``"none"``, for signals that already are
rates). Weights lie in [0, 1] and add up to at most 1, so the model's share is what they leave and a
field of weight 1 orders by itself. A list whose values are all equal scales to 0 and moves nothing.

Fusion only reorders: ``relevance_score`` stays the model's, the blend is returned beside it as
``fused_score``, and billing, limits and the score cache never see it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import invalid
from gateway.schemas import FusionRequest

Normalize = Literal["minmax", "none"]
NORMALIZATIONS: tuple[Normalize, ...] = ("minmax", "none")
MAX_FIELDS = 16
KEY_OPTIONS = ("fusion", "fusion_normalize", "fusion_missing")  # on a key's line in the keys file
_SLACK = 1e-9  # weights such as 0.7 + 0.2 + 0.1 add up to a hair over 1 in binary floating point


@dataclass(frozen=True, slots=True)
class FusionSpec:
    """What to blend: validated weights per field, the scaling and the value for a missing field."""

    weights: tuple[tuple[str, float], ...]
    normalize: Normalize = "minmax"
    missing: float | None = None  # None: a document without the field is a 400

    @property
    def model_weight(self) -> float:
        rest = 1.0 - math.fsum(weight for _, weight in self.weights)
        return rest if rest > _SLACK else 0.0


@dataclass(frozen=True, slots=True)
class FusionPlan:
    """A spec bound to one request's documents: the field values, read and checked before any scoring."""

    spec: FusionSpec
    columns: tuple[tuple[float, ...], ...]  # per field (in spec order), one value per document

    def blend(self, scores: Sequence[float]) -> list[float]:
        """The fused score of every document, from the model's scores in document order."""
        scale = _minmax if self.spec.normalize == "minmax" else list
        fused = [self.spec.model_weight * value for value in scale(scores)]
        for (_, weight), column in zip(self.spec.weights, self.columns, strict=True):
            for i, value in enumerate(scale(column)):
                fused[i] += weight * value
        return fused

    def only(self, indices: Sequence[int]) -> FusionPlan:
        """The plan for the documents at ``indices`` alone (a cascade's second stage blends over those)."""
        return FusionPlan(self.spec, tuple(tuple(column[i] for i in indices) for column in self.columns))


def spec(fields: dict[str, float], normalize: str, missing: float | None) -> FusionSpec:
    """Validated fusion settings; ValueError says what is wrong (callers add where it came from)."""
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"fusion may name at most {MAX_FIELDS} fields")
    for name, weight in fields.items():
        if not name:
            raise ValueError("fusion field names must not be empty")
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"fusion weight of '{name}' is {weight}; weights lie between 0 and 1")
    total = math.fsum(fields.values())
    if total > 1.0 + _SLACK:
        raise ValueError(
            f"fusion weights add up to {total:g}; they may add up to at most 1 (the model's score "
            "gets the rest)"
        )
    scaling = next((name for name in NORMALIZATIONS if name == normalize), None)
    if scaling is None:
        raise ValueError(f"fusion normalize must be one of {', '.join(NORMALIZATIONS)}")
    if missing is not None and not math.isfinite(missing):
        raise ValueError("fusion missing must be a finite number")
    return FusionSpec(tuple(fields.items()), scaling, missing)


def from_request(request: FusionRequest) -> FusionSpec | None:
    """The request's fusion; an empty ``fields`` object means none (it also turns a key's default off)."""
    if not request.fields:
        return None
    try:
        return spec(request.fields, request.normalize, request.missing)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def plan_for(
    requested: FusionRequest | None,
    key_default: FusionSpec | None,
    documents: Sequence[str | dict[str, Any]],
) -> FusionPlan | None:
    """The fusion a v1 request gets: its own, else its key's default when every document is an object
    (a key's default cannot make string documents, or the v2 route, fail)."""
    if requested is not None:
        chosen = from_request(requested)
        origin = "fusion"
    elif key_default is not None and all(isinstance(doc, dict) for doc in documents):
        chosen, origin = key_default, "this API key's default fusion"
    else:
        return None
    if chosen is None:
        return None
    return FusionPlan(chosen, tuple(_column(chosen, name, documents, origin) for name, _ in chosen.weights))


def _column(
    spec: FusionSpec, name: str, documents: Sequence[str | dict[str, Any]], origin: str
) -> tuple[float, ...]:
    values: list[float] = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise invalid(f"documents[{i}] is a string; {origin} needs object documents with field '{name}'")
        value = doc.get(name)
        if value is None and spec.missing is not None:
            values.append(spec.missing)
        elif name not in doc:
            raise invalid(f"documents[{i}] has no field '{name}' named in {origin}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"documents[{i}].{name} is {_kind(value)}; {origin} needs a number")
        else:
            values.append(float(value))
    return tuple(values)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _minmax(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    if high <= low:
        return [0.0] * len(values)
    return [(value - low) / (high - low) for value in values]


def order_of(scores: Sequence[float], fused: Sequence[float] | None) -> list[int]:
    """Document indices best first: by the blend when there is one, then the model's score, then position."""
    if fused is None:
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(range(len(scores)), key=lambda i: (-fused[i], -scores[i], i))


def parse_key_options(options: dict[str, str]) -> FusionSpec | None:
    """A key's default from its keys-file options ``fusion=ctr:0.2,conversion_rate:0.1``,
    ``fusion_normalize=minmax|none`` and ``fusion_missing=<number>``; ValueError when malformed."""
    unknown = sorted(set(options) - set(KEY_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]}; the fusion options are {', '.join(KEY_OPTIONS)}")
    if "fusion" not in options:
        if options:
            raise ValueError(f"{', '.join(sorted(options))} needs fusion=<field>:<weight>,...")
        return None
    fields: dict[str, float] = {}
    for item in options["fusion"].split(","):
        name, sep, text = item.partition(":")
        try:
            weight = float(text)
        except ValueError:
            weight = math.nan
        if not name or not sep or math.isnan(weight) or name in fields:
            raise ValueError("fusion=<field>:<weight>,... with weights from 0 to 1 adding up to at most 1")
        fields[name] = weight
    missing: float | None = None
    if "fusion_missing" in options:
        try:
            missing = float(options["fusion_missing"])
        except ValueError:
            raise ValueError("fusion_missing must be a number") from None
    return spec(fields, options.get("fusion_normalize", "minmax"), missing)
