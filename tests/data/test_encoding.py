"""fit_schema and FeatureEncoder: raw values to indices and scaled floats, fitted on training data only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from deepfm.data.encoding import EncodedBatch, FeatureEncoder, factorized
from deepfm.data.fitting import fit_schema
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, Transform, TransformKind
from deepfm.errors import EncodingError, SchemaError

NAN = float("nan")


def spec(max_length: int = 3) -> DatasetSchema:
    """An unfitted schema with every feature type and transform."""
    return DatasetSchema(
        [
            FieldSchema("user_id", FeatureType.SPARSE),
            FieldSchema("age", FeatureType.SPARSE, transform=Transform(TransformKind.BUCKETIZE, (1, 18, 25))),
            FieldSchema(
                "zip_prefix", FeatureType.SPARSE, source="zip_code", transform=Transform(TransformKind.PREFIX, length=3)
            ),
            FieldSchema(
                "genres", FeatureType.SEQUENCE, max_length=max_length, transform=Transform(TransformKind.SPLIT)
            ),
            FieldSchema("price", FeatureType.DENSE),
        ]
    )


def train_frame() -> pd.DataFrame:
    """Training rows: user 196 three times (as int, str and float), 13 and 7 twice, 42 once."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([196, "196", 196.0, 7, 7, 13, 13, 42, None], dtype=object),
            "age": [1, 18, 25, 30, 17, 60, 24, 18, 40],
            "zip_code": ["85711", "85712", "94043", "94040", "02134", "857", "10003", "94043", "55414"],
            "genres": ["Drama|Comedy", ["Drama"], "Action", None, "Drama|Action", "Comedy", "", "Drama", "Horror"],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, None],
        }
    )


@pytest.fixture
def encoder() -> FeatureEncoder:
    return FeatureEncoder(fit_schema(spec(), train_frame()))


def encode_one(encoder: FeatureEncoder, field: str, values: list[Any]) -> EncodedBatch:
    """Encode a single field from a plain list of raw values."""
    source = encoder.schema.fields[field].source
    return encoder.encode({source: values}, len(values), fields=[field])


def indices(encoder: FeatureEncoder, field: str, values: list[Any]) -> list[Any]:
    return list(encode_one(encoder, field, values).features[field].tolist())


def index_of(encoder: FeatureEncoder, field: str, key: str) -> int:
    vocabulary = encoder.schema.fields[field].vocabulary
    assert vocabulary is not None
    return vocabulary.index(key) + 1


# --- fitting ---------------------------------------------------------------------------------------------------


def test_vocabulary_is_ordered_by_frequency_then_value(encoder: FeatureEncoder) -> None:
    user = encoder.schema.fields["user_id"]

    # 196 x3 (int, str and float forms counted together), then 13 and 7 x2 (tie: "13" < "7"), then 42.
    assert user.vocabulary == ("196", "13", "7", "42")
    assert user.vocabulary_size == 5
    assert encoder.schema.fields["genres"].vocabulary == ("Drama", "Action", "Comedy", "Horror")
    assert encoder.schema.fields["age"].vocabulary == ("25", "18", "1")  # buckets of 1..60: 4, 3 and 2 rows


def test_min_frequency_drops_rare_values() -> None:
    fitted = fit_schema(spec(), train_frame(), min_frequency=2)
    encoder = FeatureEncoder(fitted)

    assert fitted.fields["user_id"].vocabulary == ("196", "13", "7")
    assert fitted.fields["genres"].vocabulary == ("Drama", "Action", "Comedy")
    assert indices(encoder, "user_id", [42, 196]) == [0, 1]


def test_dense_statistics_are_fitted_ignoring_missing(encoder: FeatureEncoder) -> None:
    price = encoder.schema.fields["price"]

    assert price.mean == pytest.approx(4.5)
    assert price.std == pytest.approx(np.std(np.arange(1.0, 9.0)))  # population std of 1..8


def test_constant_dense_column_gets_unit_std() -> None:
    frame = train_frame().assign(price=3.0)

    price = fit_schema(spec(), frame).fields["price"]

    assert (price.mean, price.std) == (3.0, 1.0)


def test_fit_returns_a_new_schema_and_leaves_the_spec_unfitted() -> None:
    unfitted = spec()

    fitted = fit_schema(unfitted, train_frame())

    assert not unfitted.fields["user_id"].is_fitted
    assert all(f.is_fitted for f in fitted.fields.values())
    assert fitted.field_names == unfitted.field_names


def test_fit_refuses_a_missing_column() -> None:
    with pytest.raises(SchemaError, match="'zip_prefix' reads column 'zip_code'"):
        fit_schema(spec(), train_frame().drop(columns="zip_code"))


def test_encoder_refuses_an_unfitted_schema() -> None:
    with pytest.raises(SchemaError, match=r"\['user_id', 'age', 'zip_prefix', 'genres'\] have no fitted vocabulary"):
        FeatureEncoder(spec())


# --- sparse fields ----------------------------------------------------------------------------------------------


def test_values_unseen_at_fit_map_to_oov(encoder: FeatureEncoder) -> None:
    batch = encode_one(encoder, "user_id", [196, 999, "13", "unknown", 7])

    assert batch.features["user_id"].tolist() == [1, 0, 2, 0, 3]
    assert batch.features["user_id"].dtype == np.int64
    assert batch.oov_rows == {"user_id": 2}


@pytest.mark.parametrize("fitted_as", [196, "196", 196.0])
@pytest.mark.parametrize("encoded_as", [196, "196", 196.0, np.int64(196), np.float64(196.0)])
def test_int_float_and_str_forms_of_an_id_match(fitted_as: Any, encoded_as: Any) -> None:
    frame = train_frame().assign(user_id=[fitted_as] * 3 + [5] * 6)
    encoder = FeatureEncoder(fit_schema(spec(), frame))

    assert encoder.schema.fields["user_id"].vocabulary == ("5", "196")
    assert indices(encoder, "user_id", [encoded_as]) == [2]


def test_negative_ids_match_their_string_form() -> None:
    encoder = FeatureEncoder(fit_schema(spec(), train_frame().assign(user_id=[-3] * 9)))

    assert indices(encoder, "user_id", [-3, "-3", -3.0, 3]) == [1, 1, 1, 0]


def test_ids_with_leading_zeros_stay_strings() -> None:
    encoder = FeatureEncoder(fit_schema(spec(), train_frame().assign(user_id=["007"] * 9)))

    assert indices(encoder, "user_id", ["007", 7, "7"]) == [1, 0, 0]


def test_non_integral_float_ids_match_their_fitted_vocabulary() -> None:
    frame = train_frame().assign(user_id=[0.5, 0.5, 2.5, 2.5, 2.5, 0.5, 0.5, 1.25, 1.25])
    encoder = FeatureEncoder(fit_schema(spec(), frame))

    assert encoder.schema.fields["user_id"].vocabulary == ("0.5", "2.5", "1.25")
    # Encoding the very values the vocabulary was fitted on must find them.
    assert indices(encoder, "user_id", [0.5, 2.5, 1.25]) == [1, 2, 3]


@pytest.mark.parametrize("missing", [None, NAN, np.nan, np.float64("nan")])
def test_missing_sparse_values_map_to_oov_and_are_counted(encoder: FeatureEncoder, missing: Any) -> None:
    batch = encode_one(encoder, "user_id", [196, missing, 7])

    assert batch.features["user_id"].tolist() == [1, 0, 3]
    assert batch.oov_rows["user_id"] == 1


def test_absent_source_column_is_all_missing(encoder: FeatureEncoder) -> None:
    batch = encoder.encode({}, 2)

    for name in ("user_id", "age", "zip_prefix"):
        assert batch.features[name].tolist() == [0, 0]
    assert batch.features["genres"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert batch.features["price"].tolist() == [0.0, 0.0]
    assert batch.oov_rows == {name: 2 for name in encoder.schema.field_names}


# --- bucketize --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (0, None),  # below the first boundary
        (0.999, None),
        (-5, None),
        (1, "1"),  # exactly on a boundary: that boundary's bucket
        (17.999, "1"),
        (18, "18"),
        (18.0, "18"),
        (24.5, "18"),
        (25, "25"),
        (1000, "25"),  # above the last boundary: the last bucket
        (None, None),
        (NAN, None),
    ],
)
def test_bucketize_edges(encoder: FeatureEncoder, age: Any, bucket: str | None) -> None:
    expected = 0 if bucket is None else index_of(encoder, "age", bucket)

    batch = encode_one(encoder, "age", [age])

    assert batch.features["age"].tolist() == [expected]
    assert batch.oov_rows["age"] == (bucket is None)


def test_bucketize_labels_non_integral_boundaries() -> None:
    schema = DatasetSchema(
        [FieldSchema("x", FeatureType.SPARSE, transform=Transform(TransformKind.BUCKETIZE, (0.5, 2, 3.25)))]
    )
    encoder = FeatureEncoder(fit_schema(schema, pd.DataFrame({"x": [0.5, 1.0, 2.0, 4.0, 4.0, 9.0]})))

    assert encoder.schema.fields["x"].vocabulary == ("3.25", "0.5", "2")
    assert indices(encoder, "x", [0.7, 2.5, 3.25, 0.1]) == [2, 3, 1, 0]


# --- prefix -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zip_code", "prefix"),
    [
        ("85711", "857"),
        (85711, "857"),  # an int is prefixed through its decimal form
        ("85712-1234", "857"),
        ("857", "857"),
        ("02134", "021"),
        ("94", None),  # shorter than the prefix: "94" itself, which was never seen
        ("99999", None),
        (None, None),
    ],
)
def test_prefix_of_strings_and_ints(encoder: FeatureEncoder, zip_code: Any, prefix: str | None) -> None:
    expected = 0 if prefix is None else index_of(encoder, "zip_prefix", prefix)

    assert indices(encoder, "zip_prefix", [zip_code]) == [expected]


def test_prefix_of_a_column_matches_value_by_value(encoder: FeatureEncoder) -> None:
    strings = ["85711", "85712-1234", "02134", "94", "99999"]  # all strings: the sliced fast path
    mixed = [*strings, 85711, None]

    for column in (strings, mixed):
        assert indices(encoder, "zip_prefix", column) == [indices(encoder, "zip_prefix", [v])[0] for v in column]


def test_prefix_vocabulary_holds_prefixes(encoder: FeatureEncoder) -> None:
    assert encoder.schema.fields["zip_prefix"].vocabulary == ("857", "940", "021", "100", "554")


def test_prefix_treats_nan_as_missing() -> None:
    zips = ["85711", NAN, NAN, NAN, "94043", "85711", "94043", "85711", None]  # NaN: how pandas marks a missing str
    frame = train_frame().assign(zip_code=pd.Series(zips, dtype=object))
    encoder = FeatureEncoder(fit_schema(spec(), frame))

    assert encoder.schema.fields["zip_prefix"].vocabulary == ("857", "940")
    batch = encode_one(encoder, "zip_prefix", [NAN, "85711"])
    assert batch.features["zip_prefix"].tolist() == [0, 1]
    assert batch.oov_rows["zip_prefix"] == 1


def test_prefix_of_an_integral_float_matches_its_int_form() -> None:
    frame = train_frame().assign(zip_code=[12] * 9)
    encoder = FeatureEncoder(fit_schema(spec(), frame))

    assert indices(encoder, "zip_prefix", [12, "12", 12.0]) == [1, 1, 1]


# --- sequences --------------------------------------------------------------------------------------------------


def test_sequence_from_list_and_separated_string_match(encoder: FeatureEncoder) -> None:
    drama, action, comedy = (index_of(encoder, "genres", g) for g in ("Drama", "Action", "Comedy"))

    batch = encode_one(encoder, "genres", ["Drama|Action", ["Drama", "Action"], ("Drama", "Action"), "Comedy"])

    assert batch.features["genres"].tolist() == [
        [drama, action, 0],
        [drama, action, 0],
        [drama, action, 0],
        [comedy, 0, 0],
    ]
    assert batch.features["genres"].dtype == np.int64
    assert batch.oov_rows["genres"] == 0


def test_sequence_is_truncated_to_its_first_max_length_tokens(encoder: FeatureEncoder) -> None:
    drama, action, comedy, horror = (index_of(encoder, "genres", g) for g in ("Drama", "Action", "Comedy", "Horror"))

    rows = indices(encoder, "genres", ["Horror|Comedy|Action|Drama", ["Drama", "Action", "Comedy", "Horror", "X"]])

    assert rows == [[horror, comedy, action], [drama, action, comedy]]


def test_only_kept_tokens_count_as_oov(encoder: FeatureEncoder) -> None:
    values = [["Drama", "Action", "Comedy", "Western"], ["Western", "Drama"], ["Drama"], "Horror|Comedy|Action|X"]

    batch = encode_one(encoder, "genres", values)

    assert batch.oov_rows["genres"] == 1  # the unknown "Western" past max_length is dropped, not counted


@pytest.mark.parametrize(
    ("value", "expected", "oov"),
    [
        ("Drama|Western", ["Drama", None, None], True),  # an unknown token is 0 where it stands
        (["Western", "Drama"], [None, "Drama", None], True),
        ("Drama||Comedy|", ["Drama", "Comedy", None], False),  # empty tokens of a string are dropped
        ("", [None, None, None], True),  # a row with no token at all counts as OOV
        ([], [None, None, None], True),
        (None, [None, None, None], True),
        (NAN, [None, None, None], True),
    ],
)
def test_sequence_unknown_and_empty_values(
    encoder: FeatureEncoder, value: Any, expected: list[str | None], oov: bool
) -> None:
    batch = encode_one(encoder, "genres", [value])

    assert batch.features["genres"].tolist() == [[0 if g is None else index_of(encoder, "genres", g) for g in expected]]
    assert batch.oov_rows["genres"] == int(oov)


def test_sequence_of_integer_tokens_matches_string_vocabulary() -> None:
    schema = DatasetSchema(
        [
            FieldSchema(
                "tags", FeatureType.SEQUENCE, max_length=2, transform=Transform(TransformKind.SPLIT, separator=",")
            )
        ]
    )
    encoder = FeatureEncoder(fit_schema(schema, pd.DataFrame({"tags": ["3,4", "4"]})))

    assert encoder.schema.fields["tags"].vocabulary == ("4", "3")
    assert indices(encoder, "tags", [[3, 4], [4], "4,3"]) == [[2, 1], [1, 0], [1, 2]]
    with pytest.raises(EncodingError, match="'tags' needs a list of strings or integers") as raised:
        indices(encoder, "tags", [[3], [4.0]])  # a list holds ids: a float is no id
    assert raised.value.row == 1


# --- dense fields -----------------------------------------------------------------------------------------------


def test_dense_values_are_normalised_and_missing_is_zero(encoder: FeatureEncoder) -> None:
    price = encoder.schema.fields["price"]
    raw = [4.5, 10, None, NAN, -2.0]

    batch = encode_one(encoder, "price", raw)

    expected = [0.0 if v is None or math.isnan(v) else (v - price.mean) / price.std for v in raw]
    assert batch.features["price"].dtype == np.float32
    np.testing.assert_allclose(batch.features["price"], expected, rtol=1e-6)
    assert batch.features["price"][0] == 0.0  # the mean itself
    assert batch.oov_rows["price"] == 2


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "values", "row"),
    [
        ("price", [1.0, "abc", 2.0], 1),  # a string in a numeric field
        ("age", [20, 30, "old"], 2),
        ("price", [1.0, 2.0, math.inf], 2),  # infinity
        ("price", [-math.inf, 2.0], 0),
        ("age", [20, math.inf], 1),
        ("price", [1.0, {"a": 1}], 1),
        ("user_id", ["a", ["b"], "c"], 1),  # unhashable values
        ("user_id", [{"x": 1}, "a"], 0),
        ("genres", ["Drama", ["Drama", ["Comedy"]]], 1),
        pytest.param("price", [[1.0], [2.0]], 0, id="list-in-dense"),
        ("age", [[20], [30]], 0),
        pytest.param("zip_prefix", ["85711", ["857"]], 1, id="list-in-prefix"),
        pytest.param("genres", ["Drama", 5], 1, id="int-in-sequence"),
    ],
)
def test_wrong_types_raise_encoding_error_with_field_and_row(
    encoder: FeatureEncoder, field: str, values: list[Any], row: int
) -> None:
    source = encoder.schema.fields[field].source

    with pytest.raises(EncodingError) as info:
        encode_one(encoder, field, values)

    assert info.value.field == source
    assert info.value.row == row
    assert repr(source) in str(info.value)


def test_numeric_strings_in_a_numeric_field_are_refused(encoder: FeatureEncoder) -> None:
    with pytest.raises(EncodingError) as info:
        encode_one(encoder, "price", [3.0, "20"])

    assert info.value.row == 1


def test_column_of_the_wrong_length_is_refused(encoder: FeatureEncoder) -> None:
    with pytest.raises(EncodingError, match="'zip_code' has 2 values for 3 rows") as info:
        encoder.encode({"zip_code": ["1", "2"]}, 3, fields=["zip_prefix"])

    assert info.value.field == "zip_code"


# --- subsets, frames and the one encoding path ------------------------------------------------------------------


def test_fields_subset_encodes_only_those_fields(encoder: FeatureEncoder) -> None:
    batch = encoder.encode({"price": [4.5], "user_id": [196]}, 1, fields=["price"])

    assert list(batch.features) == ["price"]
    assert list(batch.oov_rows) == ["price"]
    assert batch.num_rows == 1


def test_fields_reading_maps_sources_to_fields_in_model_order(encoder: FeatureEncoder) -> None:
    assert encoder.fields_reading(["price", "zip_code", "nope"]) == ["zip_prefix", "price"]
    assert encoder.fields_reading(["zip_prefix"]) == []  # a field name is not a source


def test_encode_frame_equals_encode_from_plain_lists(encoder: FeatureEncoder) -> None:
    frame = train_frame()

    from_frame = encoder.encode_frame(frame)
    from_lists = encoder.encode({str(c): frame[c].tolist() for c in frame}, len(frame))

    assert from_frame.features.keys() == from_lists.features.keys()
    for name in from_frame.features:
        np.testing.assert_array_equal(from_frame.features[name], from_lists.features[name])
    assert from_frame.oov_rows == from_lists.oov_rows
    assert from_frame.num_rows == len(frame)


def test_encode_frame_treats_a_missing_column_as_missing(encoder: FeatureEncoder) -> None:
    batch = encoder.encode_frame(train_frame().drop(columns="zip_code"))

    assert batch.features["zip_prefix"].tolist() == [0] * 9
    assert batch.features["user_id"].tolist() == [1, 1, 1, 3, 3, 2, 2, 4, 0]


def test_encoding_survives_the_schema_json_round_trip(encoder: FeatureEncoder) -> None:
    served = FeatureEncoder(DatasetSchema.from_json(encoder.schema.to_json()))
    frame = random_frame(np.random.default_rng(1), 64)

    assert_batches_equal(served.encode_frame(frame), encoder.encode_frame(frame))


def random_frame(rng: np.random.Generator, num_rows: int) -> pd.DataFrame:
    """Raw rows mixing value forms, missing values, unknown values and sequence shapes."""
    users: list[Any] = [196, "196", 196.0, 7, "13", 42.0, 999, "x", None, NAN]
    ages: list[Any] = [0, 1, 17.5, 18, 25, 99, None, NAN]
    zips: list[Any] = ["85711", 94043, "02134", "1", "99999", None]
    genres: list[Any] = ["Drama|Comedy", ["Action"], "", None, "Horror|Western|Drama|Comedy", ("Comedy", "Drama")]
    prices: list[Any] = [0.0, 4.5, -3, 1e6, None, NAN]

    def pick(options: list[Any]) -> list[Any]:
        return [options[i] for i in rng.integers(0, len(options), num_rows)]

    return pd.DataFrame(
        {
            "user_id": pd.Series(pick(users), dtype=object),
            "age": pd.Series(pick(ages), dtype=object),
            "zip_code": pd.Series(pick(zips), dtype=object),
            "genres": pd.Series(pick(genres), dtype=object),
            "price": pd.Series(pick(prices), dtype=object),
        }
    )


def assert_batches_equal(actual: EncodedBatch, expected: EncodedBatch) -> None:
    assert actual.features.keys() == expected.features.keys()
    for name, values in expected.features.items():
        assert actual.features[name].dtype == values.dtype, name
        np.testing.assert_array_equal(actual.features[name], values, err_msg=name)
    assert actual.oov_rows == expected.oov_rows
    assert actual.num_rows == expected.num_rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoding_row_by_row_equals_encoding_at_once(encoder: FeatureEncoder, seed: int) -> None:
    frame = random_frame(np.random.default_rng(seed), 200)

    at_once = encoder.encode_frame(frame)
    rows = [encoder.encode_frame(frame.iloc[[i]]) for i in range(len(frame))]

    assert at_once.num_rows == 200
    for name, values in at_once.features.items():
        np.testing.assert_array_equal(np.concatenate([r.features[name] for r in rows]), values, err_msg=name)
    assert at_once.oov_rows == {name: sum(r.oov_rows[name] for r in rows) for name in at_once.oov_rows}
    assert 0 < at_once.oov_rows["user_id"] < 200  # the frame mixes known, unknown and missing values


# --- factorised columns: each distinct value judged once, the rows take its result --------------------------------


def typed_frame() -> pd.DataFrame:
    """`train_frame` with a dtype per column where one fits: int64 ids, str zip codes, float prices with NaN."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([196, 196, 7, 7, 13, 13, 42, 99, 196], dtype=np.int64),
            "age": pd.Series([1, 18, 25, 30, 17, 60, 24, 18, 40], dtype=np.int64),
            "zip_code": pd.Series(
                ["85711", "85712", None, "94040", "02134", "857", "10003", "94043", "85711"], dtype="str"
            ),
            "genres": pd.Series(
                ["Drama|Comedy", "Drama", "Action", None, "Drama|Action", "Comedy", "", "Drama", "Drama"], dtype="str"
            ),
            "price": pd.Series([1.0, 2.0, NAN, 4.0, 5.0, 1.0, 7.0, 8.0, 2.0], dtype=np.float64),
        }
    )


def as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """The same values in object columns, which are judged row by row."""
    return frame.astype(object).where(frame.notna(), None)


def test_factorised_columns_are_the_typed_ones() -> None:
    frame = typed_frame()

    assert all(factorized(frame[c]) is not None for c in frame)
    assert factorized(pd.Series([True, False])) is None  # hashed alike, True and 1 would merge
    assert factorized(as_objects(frame)["user_id"]) is None
    column = factorized(frame["zip_code"])
    assert column is not None
    assert column.codes.tolist() == [0, 1, -1, 2, 3, 4, 5, 6, 0]
    assert column.counts().tolist() == [2, 1, 1, 1, 1, 1, 1]


def test_typed_frame_fits_and_encodes_as_its_object_form() -> None:
    frame = typed_frame()

    typed = fit_schema(spec(), frame)
    objects = fit_schema(spec(), as_objects(frame))

    for name, field in objects.fields.items():
        assert typed.fields[name].vocabulary == field.vocabulary, name
        assert typed.fields[name].mean == pytest.approx(field.mean, rel=1e-12), name
        assert typed.fields[name].std == pytest.approx(field.std, rel=1e-12), name
    assert typed.fields["price"].mean == pytest.approx(np.nanmean(frame["price"]), rel=1e-12)
    encoder = FeatureEncoder(objects)
    assert_batches_equal(encoder.encode_frame(frame), encoder.encode_frame(as_objects(frame)))


@pytest.mark.parametrize(
    ("column", "row"),
    [
        pytest.param(pd.Series([1.0, 2.0, 1.0, math.inf, math.inf], dtype=np.float64), 3, id="inf-in-floats"),
        pytest.param(pd.Series([None, "2", "2", "x", "1"], dtype="str"), 1, id="strings-in-dense"),
    ],
)
@pytest.mark.parametrize("judge", ["fit", "encode"])
def test_a_bad_distinct_value_names_its_first_row(
    encoder: FeatureEncoder, column: pd.Series, row: int, judge: str
) -> None:
    frame = train_frame().iloc[: len(column)].assign(price=column.to_numpy())
    assert factorized(frame["price"]) is not None

    with pytest.raises(EncodingError) as info:
        fit_schema(spec(), frame) if judge == "fit" else encoder.encode_frame(frame)

    assert info.value.field == "price"
    assert info.value.row == row
