"""The encoding options a declared field can take: log1p and clipping, hash buckets, vocabulary limits,
and fitting in chunks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from deepfm.data.encoding import FeatureEncoder, fnv1a_64
from deepfm.data.fitting import SchemaFitter, VocabularyLimits, fit_schema
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, Transform, TransformKind
from deepfm.errors import EncodingError, SchemaError

HASHED = FieldSchema("ad_id", FeatureType.SPARSE, transform=Transform(TransformKind.HASH, buckets=1000))


def test_fnv1a_64_matches_the_published_test_vectors() -> None:
    # Landon Curt Noll's FNV test vectors for FNV-1a 64.
    hashes = fnv1a_64(["", "a", "foobar"])

    assert hashes.dtype == np.uint64
    assert [int(h) for h in hashes] == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_fnv1a_64_hashes_utf8_bytes() -> None:
    manual = 0xCBF29CE484222325
    for byte in "é".encode():
        manual = ((manual ^ byte) * 0x100000001B3) % (1 << 64)
    assert int(fnv1a_64(["é"])[0]) == manual


def test_hashed_field_maps_every_value_into_its_buckets_and_missing_to_zero() -> None:
    schema = fit_schema(DatasetSchema([HASHED]), pd.DataFrame({"ad_id": ["x"]}))
    encoder = FeatureEncoder(schema)
    values: list[Any] = ["a", "never seen", 196, "196", 196.0, None, float("nan")]

    encoded = encoder.encode({"ad_id": values}, len(values))
    indices = encoded.features["ad_id"]

    assert schema.fields["ad_id"].vocabulary_size == 1001 and schema.fields["ad_id"].vocabulary is None
    assert indices.dtype == np.int64
    assert ((indices[:5] >= 1) & (indices[:5] <= 1000)).all()
    assert indices[0] == int(fnv1a_64(["a"])[0] % 1000) + 1
    assert indices[2] == indices[3] == indices[4]  # one canonical form for 196, "196" and 196.0
    assert indices[5:].tolist() == [0, 0]
    assert encoded.oov_rows["ad_id"] == 2


def test_hashed_field_refuses_a_list() -> None:
    encoder = FeatureEncoder(fit_schema(DatasetSchema([HASHED]), pd.DataFrame({"ad_id": ["x"]})))

    with pytest.raises(EncodingError, match="'ad_id' needs a string or a number") as info:
        encoder.encode({"ad_id": ["a", ["b"]]}, 2)
    assert info.value.row == 1


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (Transform(TransformKind.LOG1P), [np.log1p(0.0), np.log1p(9.0), -np.log1p(3.0), np.log1p(99.0)]),
        (Transform(clip_min=0.0, clip_max=10.0), [0.0, 9.0, 0.0, 10.0]),
        (Transform(TransformKind.LOG1P, clip_min=0.0), [0.0, np.log1p(9.0), 0.0, np.log1p(99.0)]),
    ],
)
def test_dense_transforms_are_applied_before_standardising(transform: Transform, expected: list[float]) -> None:
    field = FieldSchema("price", FeatureType.DENSE, transform=transform)
    raw: list[Any] = [0, 9, -3, 99]
    schema = fit_schema(DatasetSchema([field]), pd.DataFrame({"price": raw}))
    fitted = schema.fields["price"]

    encoded = FeatureEncoder(schema).encode({"price": [*raw, None]}, 5).features["price"]

    values = np.array(expected)
    assert fitted.mean == pytest.approx(values.mean())
    assert fitted.std == pytest.approx(values.std())
    np.testing.assert_allclose(encoded[:4], (values - values.mean()) / values.std(), rtol=1e-6)
    assert encoded[4] == 0.0


def test_vocabulary_limits_cut_by_frequency_and_size_per_field() -> None:
    frame = pd.DataFrame({"a": list("xxxxyyyzzw"), "b": list("xxxxyyyzzw")})
    schema = DatasetSchema([FieldSchema("a", FeatureType.SPARSE), FieldSchema("b", FeatureType.SPARSE)])

    fitted = fit_schema(schema, frame, min_frequency=3, limits={"b": VocabularyLimits(min_frequency=2, max_size=2)})

    assert fitted.fields["a"].vocabulary == ("x", "y")
    assert fitted.fields["b"].vocabulary == ("x", "y")
    assert fit_schema(schema, frame, limits={"a": VocabularyLimits(1, 3)}).fields["a"].vocabulary == ("x", "y", "z")


def test_limits_for_an_unknown_field_are_refused() -> None:
    with pytest.raises(SchemaError, match=r"unknown fields \['nope'\]"):
        SchemaFitter(DatasetSchema([FieldSchema("a", FeatureType.SPARSE)]), limits={"nope": VocabularyLimits(1, 0)})


def test_fitting_in_chunks_equals_fitting_at_once() -> None:
    rng = np.random.default_rng(0)
    size = 5_000
    frame = pd.DataFrame(
        {
            "item": rng.zipf(1.5, size) % 700,
            "city": rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), size),
            "tags": ["|".join(rng.choice(list("pqrst"), int(rng.integers(0, 4)))) for _ in range(size)],
            "price": rng.lognormal(3, 1, size) * 1e6,
        }
    )
    schema = DatasetSchema(
        [
            FieldSchema("item", FeatureType.SPARSE),
            FieldSchema("city", FeatureType.SPARSE),
            FieldSchema("tags", FeatureType.SEQUENCE, max_length=3, transform=Transform(TransformKind.SPLIT)),
            FieldSchema("price", FeatureType.DENSE),
        ]
    )
    whole = fit_schema(schema, frame, min_frequency=2)
    fitter = SchemaFitter(schema, min_frequency=2)
    for start in range(0, size, 1_234):
        fitter.update(frame.iloc[start : start + 1_234])
    chunked = fitter.fitted()

    for name in ("item", "city", "tags"):
        assert chunked.fields[name].vocabulary == whole.fields[name].vocabulary, name
    assert chunked.fields["price"].mean == pytest.approx(frame["price"].mean(), rel=1e-12)
    assert chunked.fields["price"].std == pytest.approx(frame["price"].std(ddof=0), rel=1e-9)
    assert whole.fields["price"].std == pytest.approx(frame["price"].std(ddof=0), rel=1e-9)


def test_fitting_records_a_raw_example_of_each_field() -> None:
    schema = DatasetSchema(
        [
            FieldSchema("zip", FeatureType.SPARSE, transform=Transform(TransformKind.PREFIX, length=2)),
            FieldSchema("price", FeatureType.DENSE, transform=Transform(TransformKind.LOG1P)),
            FieldSchema("tags", FeatureType.SEQUENCE, max_length=2, transform=Transform(TransformKind.SPLIT)),
        ]
    )
    frame = pd.DataFrame({"zip": ["10001", "20002", "20003"], "price": [None, 12.5, 3.0], "tags": ["", "a|b", "c"]})
    fitted = SchemaFitter(schema).update(frame.iloc[:1]).update(frame.iloc[1:]).fitted()
    assert fitted.fields["zip"].example == "20003"  # raw, and its prefix "20" is the most frequent
    assert fitted.fields["price"].example == 12.5  # before log1p, the first present value
    assert fitted.fields["tags"].example == "a|b"
    assert DatasetSchema.from_json(fitted.to_json()).fields["zip"].example == "20003"
