"""DatasetSchema / FieldSchema / Transform: validation, views and the lossless JSON round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepfm.data.schema import (
    FILE_VOCABULARIES_FORMAT_VERSION,
    OOV_INDEX,
    SCHEMA_FORMAT_VERSION,
    DatasetSchema,
    FeatureType,
    FieldSchema,
    Transform,
    TransformKind,
    embedding_dim_for,
    vocabulary_files,
)
from deepfm.errors import DeepFMError, SchemaError

SPARSE, DENSE, SEQUENCE = FeatureType.SPARSE, FeatureType.DENSE, FeatureType.SEQUENCE
SPLIT = Transform(TransformKind.SPLIT, separator=",")
HASH = Transform(TransformKind.HASH, buckets=8)


@pytest.fixture
def fitted_schema() -> DatasetSchema:
    """Every feature type and transform, with fitted vocabularies and dense statistics."""
    return DatasetSchema(
        [
            FieldSchema(
                "user_id", SPARSE, vocabulary_size=4, embedding_dim=16, group="user", vocabulary=("7", "3", "x")
            ),
            FieldSchema(
                "age",
                SPARSE,
                vocabulary_size=3,
                embedding_dim=4,
                group="user",
                transform=Transform(TransformKind.BUCKETIZE, (1, 18.5, 25)),
                vocabulary=("18.5", "1"),
            ),
            FieldSchema(
                "zip_prefix",
                SPARSE,
                vocabulary_size=2,
                embedding_dim=4,
                source="zip_code",
                transform=Transform(TransformKind.PREFIX, length=3),
                vocabulary=("857",),
            ),
            FieldSchema(
                "tags",
                SEQUENCE,
                vocabulary_size=3,
                embedding_dim=8,
                group="item",
                max_length=5,
                combiner="max",
                transform=SPLIT,
                vocabulary=("b", "a"),
            ),
            FieldSchema("price", DENSE, embedding_dim=2, mean=12.25, std=0.1),
            FieldSchema("price_again", DENSE, embedding_dim=3, source="price", mean=-1.5, std=3.0),
        ],
        label_field="clicked",
    )


def test_json_round_trip_is_lossless(fitted_schema: DatasetSchema) -> None:
    restored = DatasetSchema.from_json(fitted_schema.to_json())

    assert restored == fitted_schema
    assert restored.label_field == "clicked"
    assert restored.fields["age"].transform == Transform(TransformKind.BUCKETIZE, (1.0, 18.5, 25.0))
    assert restored.fields["zip_prefix"].transform.length == 3
    assert restored.fields["zip_prefix"].source == "zip_code"
    assert restored.fields["tags"].transform.separator == ","
    assert restored.fields["tags"].combiner == "max"
    assert restored.fields["user_id"].vocabulary == ("7", "3", "x")
    assert (restored.fields["price"].mean, restored.fields["price"].std) == (12.25, 0.1)
    assert restored.to_json() == fitted_schema.to_json()


def test_json_carries_format_version_and_no_unused_transform_parameters(fitted_schema: DatasetSchema) -> None:
    data = json.loads(fitted_schema.to_json())

    assert data["format_version"] == SCHEMA_FORMAT_VERSION
    by_name = {f["name"]: f for f in data["fields"]}
    assert by_name["age"]["transform"] == {"kind": "bucketize", "boundaries": [1.0, 18.5, 25.0]}
    assert by_name["user_id"]["transform"] == {"kind": "identity"}
    assert "mean" not in by_name["user_id"] and by_name["price"]["mean"] == 12.25
    assert "vocabulary" not in by_name["price"]


def test_unfitted_field_round_trips_as_unfitted() -> None:
    schema = DatasetSchema([FieldSchema("item", SPARSE, vocabulary_size=10)])

    restored = DatasetSchema.from_json(schema.to_json())

    assert restored.fields["item"].vocabulary is None
    assert not restored.fields["item"].is_fitted
    assert restored.fields["item"].vocabulary_size == 10


@pytest.mark.parametrize("version", [None, 0, 3, "1"])  # 1 and 2 are the known formats
def test_from_json_refuses_other_format_versions(fitted_schema: DatasetSchema, version: Any) -> None:
    data = fitted_schema.to_dict()
    data["format_version"] = version

    with pytest.raises(SchemaError, match="format_version"):
        DatasetSchema.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"format_version": 1}', "'fields' list"),
        ('{"format_version": 1, "fields": {"a": 1}}', "'fields' list"),
        ('{"format_version": 1, "fields": []}', "at least one field"),
        ('{"format_version": 1, "fields": [{"name": "a", "feature_type": "sparse"}]}', "embedding_dim"),
        ('{"format_version": 1, "fields": [{"name": "a", "feature_type": "bogus", "embedding_dim": 4}]}', "bogus"),
        (
            '{"format_version": 1, "fields": [{"name": "a", "feature_type": "sparse", "embedding_dim": 4,'
            ' "transform": {"kind": "bucketize", "boundaries": ["x"]}}]}',
            "invalid transform",
        ),
        (
            '{"format_version": 1, "fields": [{"name": "a", "feature_type": "sparse", "embedding_dim": 4,'
            ' "vocabulary_size": 5, "vocabulary": ["p", "q"]}]}',
            "vocabulary_size",
        ),
    ],
)
def test_from_json_refuses_bad_documents(text: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        DatasetSchema.from_json(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"vocabulary_size": 0}, "vocabulary_size must be >= 1"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
        ({"vocabulary_size": 3, "vocabulary": ("a",)}, "vocabulary_size must be 2"),
        ({"vocabulary_size": 3, "vocabulary": ("a", "a")}, "duplicate"),
        ({"transform": SPLIT}, "split transform"),
        ({"feature_type": SEQUENCE}, "split transform"),
        ({"feature_type": SEQUENCE, "transform": SPLIT, "combiner": "median"}, "unknown combiner 'median'"),
        ({"feature_type": SEQUENCE, "transform": SPLIT, "max_length": 0}, "max_length must be >= 1"),
        ({"feature_type": DENSE, "std": 0.0}, "std must be > 0"),
        ({"feature_type": DENSE, "transform": Transform(TransformKind.PREFIX, length=2)}, "identity or log1p"),
        ({"feature_type": DENSE, "transform": HASH}, "identity or log1p transform, not hash"),
        ({"transform": Transform(TransformKind.LOG1P)}, "log1p and clipping go with dense fields only"),
        ({"transform": Transform(clip_min=0.0)}, "log1p and clipping go with dense fields only"),
        ({"feature_type": SEQUENCE, "transform": HASH}, "split transform|hash transform"),
        ({"transform": HASH, "vocabulary_size": 3, "vocabulary": ("a", "b")}, "hashed field has no vocabulary"),
    ],
)
def test_invalid_field_raises_schema_error(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"name": "f", "feature_type": SPARSE, **kwargs}

    with pytest.raises(SchemaError, match=message) as info:
        FieldSchema(**arguments)

    if arguments["name"]:
        assert "field 'f'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": TransformKind.BUCKETIZE}, "at least one boundary"),
        ({"kind": TransformKind.BUCKETIZE, "boundaries": (1, 1, 2)}, "strictly ascending"),
        ({"kind": TransformKind.BUCKETIZE, "boundaries": (5, 2)}, "strictly ascending"),
        ({"kind": TransformKind.PREFIX, "length": 0}, "length >= 1"),
        ({"kind": TransformKind.SPLIT, "separator": ""}, "non-empty separator"),
        ({"kind": TransformKind.HASH}, "buckets >= 1"),
        ({"kind": TransformKind.PREFIX, "length": 2, "clip_min": 0.0}, "go with the identity and log1p"),
        ({"kind": TransformKind.LOG1P, "clip_min": 5.0, "clip_max": 1.0}, "clip_min 5.0 is above clip_max 1.0"),
        ({"kind": "squash"}, "unknown transform 'squash'"),
    ],
)
def test_invalid_transform_raises_schema_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Transform(**kwargs)


def test_schema_errors_are_library_errors() -> None:
    assert issubclass(SchemaError, DeepFMError)


def test_duplicate_field_names_are_refused() -> None:
    fields = [FieldSchema("a", SPARSE), FieldSchema("b", SPARSE), FieldSchema("a", DENSE)]

    with pytest.raises(SchemaError, match=r"duplicate field names: \['a'\]"):
        DatasetSchema(fields)


def test_empty_schema_is_refused() -> None:
    with pytest.raises(SchemaError, match="at least one field"):
        DatasetSchema([])


def test_label_field_cannot_be_a_feature() -> None:
    with pytest.raises(SchemaError, match="label field 'a'"):
        DatasetSchema([FieldSchema("a", SPARSE)], label_field="a")


def test_mapping_key_must_match_field_name() -> None:
    with pytest.raises(SchemaError, match="registered under 'b' is named 'a'"):
        DatasetSchema({"b": FieldSchema("a", SPARSE)})


def test_views_by_type_keep_model_order(fitted_schema: DatasetSchema) -> None:
    assert fitted_schema.field_names == ["user_id", "age", "zip_prefix", "tags", "price", "price_again"]
    assert fitted_schema.num_fields == 6
    assert fitted_schema.total_embedding_dim == 16 + 4 + 4 + 8 + 2 + 3
    assert [f.name for f in fitted_schema.sparse_fields] == ["user_id", "age", "zip_prefix"]
    assert [f.name for f in fitted_schema.sequence_fields] == ["tags"]
    assert [f.name for f in fitted_schema.dense_fields] == ["price", "price_again"]


def test_source_fields_are_distinct_in_first_use_order(fitted_schema: DatasetSchema) -> None:
    assert fitted_schema.source_fields == ["user_id", "age", "zip_code", "tags", "price"]


def test_source_defaults_to_name_and_fitted_state() -> None:
    unfitted = FieldSchema("movie", SPARSE)
    dense = FieldSchema("price", DENSE)

    assert unfitted.source == "movie"
    assert unfitted.is_categorical and not unfitted.is_fitted
    assert not dense.is_categorical and dense.is_fitted
    assert OOV_INDEX == 0


def test_with_fields_replaces_by_name_and_refuses_unknown(fitted_schema: DatasetSchema) -> None:
    wider = fitted_schema.with_embedding_dims({"tags": 32, "price": 1})

    assert wider.fields["tags"].embedding_dim == 32
    assert wider.fields["price"].embedding_dim == 1
    assert wider.field_names == fitted_schema.field_names
    assert fitted_schema.fields["tags"].embedding_dim == 8  # the original is unchanged
    with pytest.raises(SchemaError, match=r"unknown fields \['nope'\]"):
        fitted_schema.with_fields([FieldSchema("nope", SPARSE)])


def test_equality_compares_fields_and_label(fitted_schema: DatasetSchema) -> None:
    relabelled = DatasetSchema(fitted_schema.fields.values(), label_field="other")
    reordered = DatasetSchema(reversed(list(fitted_schema.fields.values())), label_field="clicked")

    assert fitted_schema != relabelled
    assert fitted_schema != reordered
    assert fitted_schema == DatasetSchema(fitted_schema.fields.values(), label_field="clicked")


@pytest.mark.parametrize(
    ("vocabulary_size", "dim"),
    [(1, 4), (3, 4), (16, 4), (17, 8), (383, 8), (512, 8), (513, 16), (944, 16), (1679, 16)],
)
def test_embedding_dim_for(vocabulary_size: int, dim: int) -> None:
    assert embedding_dim_for(vocabulary_size) == dim


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "hash", "bukets": 3}, r"transform 'hash' takes no \['bukets'\]; it takes \['buckets'\]"),
        ({"kind": "log1p", "length": 3}, r"takes no \['length'\]"),
        ({"kind": "hash", "buckets": 2.5}, "invalid transform"),
        ({"kind": "hash", "buckets": True}, "invalid transform"),
        ({"kind": "log1p", "clip_min": "0"}, "invalid transform"),
        ({"boundaries": [1]}, "needs a 'kind'"),
        ("bogus", "unknown transform 'bogus'"),
    ],
)
def test_transform_from_dict_names_the_bad_key_or_value(data: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Transform.from_dict(data)


def test_new_transforms_round_trip_with_only_their_parameters() -> None:
    schema = DatasetSchema(
        [
            FieldSchema("ad_id", SPARSE, vocabulary_size=9, transform=HASH),
            FieldSchema("price", DENSE, transform=Transform(TransformKind.LOG1P, clip_min=0.0)),
            FieldSchema("age", DENSE, transform=Transform(clip_max=90)),
        ]
    )
    data = json.loads(schema.to_json())

    assert [f["transform"] for f in data["fields"]] == [
        {"kind": "hash", "buckets": 8},
        {"kind": "log1p", "clip_min": 0.0},
        {"kind": "identity", "clip_max": 90.0},
    ]
    assert "vocabulary" not in data["fields"][0]
    assert DatasetSchema.from_json(schema.to_json()) == schema
    assert Transform.from_dict("log1p") == Transform(TransformKind.LOG1P)


def test_a_hashed_field_is_fitted_once_it_has_a_row_per_bucket() -> None:
    assert not FieldSchema("ad_id", SPARSE, transform=HASH).is_fitted
    assert FieldSchema("ad_id", SPARSE, vocabulary_size=9, transform=HASH).is_fitted


def test_a_vocabulary_named_in_a_file_round_trips_with_its_values(fitted_schema: DatasetSchema) -> None:
    name = next(f.name for f in fitted_schema.fields.values() if f.vocabulary)
    values = fitted_schema.fields[name].vocabulary
    assert values is not None
    data = json.loads(fitted_schema.to_json({name: "vocabularies.npz"}))
    field = next(f for f in data["fields"] if f["name"] == name)

    assert data["format_version"] == FILE_VOCABULARIES_FORMAT_VERSION
    assert field["vocabulary_file"] == "vocabularies.npz" and "vocabulary" not in field
    assert vocabulary_files(data) == {name: "vocabularies.npz"}
    assert DatasetSchema.from_dict(data, {name: values}) == fitted_schema
    with pytest.raises(SchemaError, match="vocabularies given for"):
        DatasetSchema.from_dict(data)  # the file's values were not read
    with pytest.raises(SchemaError, match="which format_version 1 does not have"):
        DatasetSchema.from_dict({**data, "format_version": SCHEMA_FORMAT_VERSION}, {name: values})
    with pytest.raises(SchemaError, match="which have no vocabulary"):
        fitted_schema.to_dict({"no such field": "vocabularies.npz"})
