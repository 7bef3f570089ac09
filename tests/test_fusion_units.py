"""Score fusion without servers: the blend's arithmetic, its order, and every way a request or a keys-file
line can get it wrong (gateway/fusion.py)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import keys
from gateway.errors import ApiError, ErrorKind
from gateway.fusion import FusionSpec, order_of, parse_key_options, plan_for
from gateway.schemas import FusionRequest, V1RerankRequest

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64


def request(fields: dict[str, float], **options: Any) -> FusionRequest:
    return FusionRequest(fields=fields, **options)


def rejected(
    fusion: FusionRequest | None, documents: list[Any], key_default: FusionSpec | None = None
) -> str:
    with pytest.raises(ApiError) as raised:
        plan_for(fusion, key_default, documents)
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    return raised.value.message


def test_worked_example_minmax() -> None:
    """Three products, model scores 0.75 / 0.5 / 0.25 and ctr 0.125 / 0.25 / 0.375 (exact in binary),
    ctr weighted 0.5: min-max scales both to [1, 0.5, 0] and [0, 0.5, 1], so the blend is
    0.5*s + 0.5*c = [0.5, 0.5, 0.5] and the tie falls back to the model's order. With ctr at 0.6 the
    third product wins: 0.4*[1, 0.5, 0] + 0.6*[0, 0.5, 1] = [0.4, 0.5, 0.6]."""
    docs = [{"text": "a", "ctr": 0.125}, {"text": "b", "ctr": 0.25}, {"text": "c", "ctr": 0.375}]
    scores = [0.75, 0.5, 0.25]
    even = plan_for(request({"ctr": 0.5}), None, docs)
    assert even is not None
    assert even.blend(scores) == pytest.approx([0.5, 0.5, 0.5])
    assert order_of(scores, even.blend(scores)) == [0, 1, 2]
    leaning = plan_for(request({"ctr": 0.6}), None, docs)
    assert leaning is not None
    assert leaning.blend(scores) == pytest.approx([0.4, 0.5, 0.6])
    assert order_of(scores, leaning.blend(scores)) == [2, 1, 0]


def test_none_scaling_uses_values_as_sent() -> None:
    docs = [{"ctr": 0.2, "cvr": 0.1}, {"ctr": 0.0, "cvr": 0.3}]
    plan = plan_for(request({"ctr": 0.25, "cvr": 0.25}, normalize="none"), None, docs)
    assert plan is not None
    assert plan.blend([0.8, 0.4]) == pytest.approx(
        [0.5 * 0.8 + 0.25 * 0.2 + 0.25 * 0.1, 0.5 * 0.4 + 0.25 * 0.3]
    )


def test_constant_field_scales_to_zero_and_moves_nothing() -> None:
    plan = plan_for(request({"ctr": 0.5}), None, [{"ctr": 3}, {"ctr": 3}, {"ctr": 3}])
    assert plan is not None
    scores = [0.2, 0.7, 0.4]
    assert order_of(scores, plan.blend(scores)) == order_of(scores, None) == [1, 2, 0]


finite = st.floats(min_value=0, max_value=1, allow_nan=False)


@given(
    scores=st.lists(finite, min_size=1, max_size=30),
    data=st.data(),
)
def test_zero_weights_keep_the_plain_order_and_weight_one_follows_the_field(
    scores: list[float], data: st.DataObject
) -> None:
    # Whole numbers: values closer than a float's resolution over their range scale to the same value.
    ctr = data.draw(st.lists(st.integers(-1000, 1000), min_size=len(scores), max_size=len(scores)))
    docs = [{"ctr": value} for value in ctr]
    zero = plan_for(request({"ctr": 0.0}), None, docs)
    assert zero is not None
    assert order_of(scores, zero.blend(scores)) == order_of(scores, None)
    only = plan_for(request({"ctr": 1.0}), None, docs)
    assert only is not None
    by_field = order_of(scores, only.blend(scores))
    assert [ctr[i] for i in by_field] == sorted(ctr, reverse=True)


def test_missing_value_stands_in_for_absent_and_null_fields() -> None:
    plan = plan_for(request({"ctr": 1.0}, missing=0.5), None, [{"ctr": 1}, {}, {"ctr": None}, {"ctr": 0}])
    assert plan is not None
    assert plan.columns == ((1.0, 0.5, 0.5, 0.0),)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"ctr": 1}, {"text": "x"}], "documents[1] has no field 'ctr' named in fusion"),
        ([{"ctr": "0.3"}], "documents[0].ctr is a string; fusion needs a number"),
        ([{"ctr": None}], "documents[0].ctr is null; fusion needs a number"),
        ([{"ctr": True}], "documents[0].ctr is a boolean; fusion needs a number"),
        ([{"ctr": [1]}], "documents[0].ctr is a list; fusion needs a number"),
        (["plain text"], "documents[0] is a string; fusion needs object documents with field 'ctr'"),
    ],
)
def test_bad_field_values_name_the_document_and_the_field(documents: list[Any], message: str) -> None:
    assert rejected(request({"ctr": 0.3}), documents) == message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ctr": 1.5}, "fusion weight of 'ctr' is 1.5; weights lie between 0 and 1"),
        ({"ctr": -0.1}, "fusion weight of 'ctr' is -0.1; weights lie between 0 and 1"),
        ({"ctr": 0.7, "cvr": 0.4}, "fusion weights add up to 1.1; they may add up to at most 1"),
        ({"": 0.1}, "fusion field names must not be empty"),
        ({f"f{i}": 0.01 for i in range(17)}, "fusion may name at most 16 fields"),
    ],
)
def test_bad_weights_are_rejected(fields: dict[str, float], message: str) -> None:
    assert message in rejected(request(fields), [{"ctr": 1}])


def test_weights_adding_up_to_one_in_floating_point_are_accepted() -> None:
    plan = plan_for(request({"a": 0.7, "b": 0.2, "c": 0.1}), None, [{"a": 1, "b": 2, "c": 3}])
    assert plan is not None
    assert plan.spec.model_weight == 0.0


def test_empty_fields_mean_no_fusion_even_over_a_key_default() -> None:
    default = parse_key_options({"fusion": "ctr:0.5"})
    assert plan_for(request({}), default, [{"ctr": 1}]) is None


def test_key_default_applies_to_object_documents_only() -> None:
    default = parse_key_options({"fusion": "ctr:0.5"})
    assert plan_for(None, default, ["a", "b"]) is None, "string documents are ranked plainly"
    plan = plan_for(None, default, [{"ctr": 1}, {"ctr": 2}])
    assert plan is not None
    assert plan.spec.weights == (("ctr", 0.5),)
    message = rejected(None, [{"ctr": 1}, {"text": "x"}], default)
    assert message == "documents[1] has no field 'ctr' named in this API key's default fusion"


def test_request_fusion_overrides_the_key_default() -> None:
    default = parse_key_options({"fusion": "ctr:0.5"})
    plan = plan_for(request({"cvr": 0.2}), default, [{"cvr": 1}])
    assert plan is not None
    assert plan.spec.weights == (("cvr", 0.2),)


def test_fusion_is_decoded_strictly() -> None:
    """A misspelt option or a weight of the wrong type is a decode error (400), never ignored."""
    for body in (
        b'{"query": "q", "documents": [], "fusion": {"weights": {"ctr": 0.1}}}',
        b'{"query": "q", "documents": [], "fusion": {"fields": {"ctr": "0.1"}}}',
        b'{"query": "q", "documents": [], "fusion": {"fields": {}, "normalize": "zscore"}}',
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(body, type=V1RerankRequest, strict=True)
    ok = msgspec.json.decode(
        b'{"query": "q", "documents": [], "fusion": {"fields": {"ctr": 1}}}',
        type=V1RerankRequest,
        strict=True,
    )
    assert ok.fusion == FusionRequest(fields={"ctr": 1.0})


def test_keys_file_fusion_default() -> None:
    line = f"shop-1 {DIGEST} rpm=60 fusion=ctr:0.2,conversion_rate:0.1 fusion_normalize=none fusion_missing=0"
    (key,) = keys.parse(line, source="keys")
    assert key.fusion == FusionSpec((("ctr", 0.2), ("conversion_rate", 0.1)), "none", 0.0)
    assert key.limits == {"rpm": 60}
    assert keys.parse(f"shop-1 {DIGEST}", source="keys")[0].fusion is None
    assert math.isclose(key.fusion.model_weight, 0.7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("fusion=ctr", "fusion=<field>:<weight>"),
        ("fusion=ctr:x", "fusion=<field>:<weight>"),
        ("fusion=ctr:0.1,ctr:0.2", "fusion=<field>:<weight>"),
        ("fusion=ctr:nan", "fusion=<field>:<weight>"),
        ("fusion=ctr:inf", "weights lie between 0 and 1"),
        ("fusion=ctr:0.8,cvr:0.8", "add up to 1.6"),
        ("fusion=ctr:0.1 fusion_normalize=zscore", "fusion normalize must be one of minmax, none"),
        ("fusion=ctr:0.1 fusion_missing=abc", "fusion_missing must be a number"),
        ("fusion_normalize=none", "fusion_normalize needs fusion=<field>:<weight>"),
        ("fusion=ctr:0.1 fusionweight=2", "unknown option fusionweight"),
    ],
)
def test_bad_keys_file_fusion_options_name_the_line(options: str, message: str) -> None:
    with pytest.raises(ValueError, match="keys line 2: ") as raised:
        keys.parse(f"# keys\nshop-1 {DIGEST} {options}", source="keys")
    assert message in str(raised.value)
