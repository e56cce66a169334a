"""Readers on tiny files written to tmp_path: every format, and every error names file and row."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest

from graphrec_jax.data import DataError, DataWarning
from graphrec_jax.data.amazon import read_amazon
from graphrec_jax.data.readers import read_id_list, read_movielens, read_split_file, read_table, unify_ids

COLUMNS = {
    "user_column": "user_id",
    "item_column": "item_id",
    "rating_column": "rating",
    "timestamp_column": "timestamp",
}


def _table(path, file_format="csv", **overrides):
    return read_table(path, file_format=file_format, **{**COLUMNS, **overrides})


def test_csv_keeps_string_ids_as_written(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating,timestamp\n007,a1,4,100\n7,b2,3.5,200\n 007 ,a1,5,300\n")
    raw = _table(path)
    assert raw.interactions["user"].tolist() == ["007", "7", "007"]  # spaces around ids are stripped
    assert raw.interactions["item"].tolist() == ["a1", "b2", "a1"]
    np.testing.assert_allclose(raw.interactions["rating"], [4.0, 3.5, 5.0])
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["timestamp"].tolist() == [100, 200, 300]


def test_tsv_separator_inferred_and_optional_columns_absent(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text("who\twhat\nu1\ti1\nu2\ti2\n")
    raw = _table(path, file_format="tsv", user_column="who", item_column="what")
    assert raw.interactions.columns.tolist() == ["user", "item"]
    assert raw.interactions["item"].tolist() == ["i1", "i2"]
    txt = tmp_path / "events.txt"
    txt.write_text("who\twhat\nu1\ti1\n")
    assert _table(txt, user_column="who", item_column="what").interactions["user"].tolist() == ["u1"]


def test_explicit_separator(tmp_path):
    path = tmp_path / "data.dat"
    path.write_text("user_id;item_id\n1;2\n")
    assert _table(path, separator=";").interactions["item"].tolist() == ["2"]


def test_parquet_keeps_integer_and_string_dtypes(tmp_path):
    path = tmp_path / "ratings.parquet"
    frame = pd.DataFrame({"user_id": [3, 1, 3], "item_id": ["007", "8", "9"], "rating": [1.0, 2.0, 3.0]})
    frame.to_parquet(path)
    raw = _table(path, file_format="parquet")
    assert raw.interactions["user"].dtype == np.int64
    assert raw.interactions["user"].tolist() == [3, 1, 3]
    assert raw.interactions["item"].tolist() == ["007", "8", "9"]
    assert "timestamp" not in raw.interactions.columns


def test_date_string_timestamps_become_seconds(tmp_path):
    path = tmp_path / "dated.csv"
    path.write_text("user_id,item_id,timestamp\nu,i,1970-01-02\nu,j,1970-01-01 00:01:00\n")
    assert _table(path).interactions["timestamp"].tolist() == [86_400, 60]


def test_unify_ids_makes_one_type_per_kind():
    ints, texts = unify_ids([np.array([1, 2]), np.array(["3", "40"], dtype=object)])
    assert ints.dtype == np.int64 and texts.dtype == np.int64 and texts.tolist() == [3, 40]
    ints, texts = unify_ids([np.array([1, 2]), np.array(["3", "007"], dtype=object)])
    assert ints.tolist() == ["1", "2"] and texts.tolist() == ["3", "007"]


def _write_movielens(folder, item_bytes: bytes):
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t881250949\n2\t20\t3\t881250950\n1\t20\t4\t881250951\n")
    (folder / "u.genre").write_text("unknown|0\nDrama|1\nMusical|2\n\n")
    (folder / "u.item").write_bytes(item_bytes)


def test_movielens_reads_latin1_titles_and_genres(tmp_path):
    items = "10|Misérables, Les (1995)|01-Jan-1995||http://x|0|1|1\n20|Toy Story (1995)|01-Jan-1995||http://y|1|0|0\n"
    _write_movielens(tmp_path / "ml", items.encode("latin-1"))
    raw = read_movielens(tmp_path / "ml")
    assert raw.interactions["timestamp"].tolist() == [881250949, 881250950, 881250951]
    assert raw.item_text["10"] == {"title": "Misérables, Les (1995)", "genres": "Drama, Musical"}
    assert raw.item_text["20"]["genres"] == "unknown"


def test_movielens_item_file_resaved_as_utf8_still_reads(tmp_path):
    _write_movielens(tmp_path / "ml", "10|Misérables (1995)|d||u|0|1|1\n".encode())
    assert read_movielens(tmp_path / "ml").item_text["10"]["title"] == "Misérables (1995)"


def test_movielens_bad_item_line_names_line(tmp_path):
    _write_movielens(tmp_path / "ml", b"10|Title|date||url|0|1|1\n20|Broken|date\n")
    with pytest.raises(DataError, match=r"u\.item, line 2: expected 8 '\|'-separated fields"):
        read_movielens(tmp_path / "ml")


def test_movielens_missing_ratings_file(tmp_path):
    (tmp_path / "ml").mkdir()
    with pytest.raises(DataError, match=r"u\.data does not exist"):
        read_movielens(tmp_path / "ml")


def test_lightgcn_lines_users_without_items_and_whitespace(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"0 5 6 7\n1\n\n2  9\t10\r\n3 11")
    split = read_split_file(path)
    assert split.users.tolist() == [0, 0, 0, 2, 2, 3]
    assert split.items.tolist() == [5, 6, 7, 9, 10, 11]
    assert split.lines.tolist() == [1, 1, 1, 4, 4, 5]
    assert split.listed_users.tolist() == [0, 1, 2, 3]
    assert split.listed_lines.tolist() == [1, 2, 4, 5]


def test_lightgcn_text_ids_when_not_integer(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("u1 a b\nu2 c\n")
    split = read_split_file(path, integer_ids=False)
    assert split.users.tolist() == ["u1", "u1", "u2"] and split.items.tolist() == ["a", "b", "c"]


def test_lightgcn_non_integer_token_names_line_and_token(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("0 1 2\n1 3 x4 5\n")
    with pytest.raises(DataError, match=r"train\.txt, line 2: token 'x4' is not a non-negative integer"):
        read_split_file(path)


def test_id_list(tmp_path):
    path = tmp_path / "cold_items.txt"
    path.write_text("4\n9\n\n12\n")
    ids, lines = read_id_list(path)
    assert ids.tolist() == [4, 9, 12] and lines.tolist() == [1, 2, 4]


def _write_amazon(folder, inter, items):
    folder.mkdir()
    (folder / "Shop.inter.json").write_text(json.dumps(inter, indent=2))
    (folder / "Shop.item.json").write_text(json.dumps(items, indent=2))


def test_amazon_flattens_sequences_and_unescapes_html(tmp_path):
    items = {
        "0": {
            "title": "Pens &amp; Pencils",
            "description": "5&quot; long",
            "brand": "Ink",
            "categories": ["A", "B"],
        },
        "1": {"title": "Paper", "description": "", "brand": "", "categories": "Office, Paper"},
        "2": {"title": "Never bought"},
    }
    _write_amazon(tmp_path / "shop", {"10": [0, 1], "11": [1]}, items)
    raw = read_amazon(tmp_path / "shop")
    assert raw.name == "Shop"
    assert raw.interactions["user"].tolist() == ["10", "10", "11"]
    assert raw.interactions["item"].tolist() == ["0", "1", "1"]
    assert raw.item_text["0"] == {
        "title": "Pens & Pencils",
        "description": '5" long',
        "brand": "Ink",
        "categories": "A, B",
    }
    assert raw.item_text["2"] == {"title": "Never bought", "description": "", "brand": "", "categories": ""}


def test_amazon_items_missing_from_item_json_warn(tmp_path):
    _write_amazon(tmp_path / "shop", {"10": [0, 5, 6]}, {"0": {"title": "x"}})
    with pytest.warns(DataWarning, match=r"2 items in Shop\.inter\.json have no entry in Shop\.item\.json"):
        read_amazon(tmp_path / "shop")


def test_amazon_truncated_json_names_line_and_column(tmp_path):
    _write_amazon(tmp_path / "shop", {"10": [0]}, {"0": {"title": "x"}})
    path = tmp_path / "shop" / "Shop.item.json"
    path.write_text(path.read_text()[:-8])
    with pytest.raises(DataError, match=r"Shop\.item\.json, line \d+, column \d+: invalid JSON"):
        read_amazon(tmp_path / "shop")


def test_amazon_name_must_be_unambiguous(tmp_path):
    _write_amazon(tmp_path / "shop", {"10": [0]}, {"0": {"title": "x"}})
    (tmp_path / "shop" / "Other.inter.json").write_text("{}")
    with pytest.raises(DataError, match="found Other.inter.json, Shop.inter.json; set data.name"):
        read_amazon(tmp_path / "shop")
    assert read_amazon(tmp_path / "shop", "Shop").name == "Shop"


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", r"bad\.csv is empty"),
        ("user_id,item_id\n", r"bad\.csv has a header but no rows"),
        (
            "uid,iid\n1,2\n",
            r"bad\.csv has no column 'user_id' \(set data\.user_column\).*columns found: 'uid', 'iid'",
        ),
        (
            "user_id,item_id,rating\n1,2,4\n1,3,five\n",
            r"bad\.csv, line 3, column 'rating': 'five' is not a number",
        ),
        (
            "user_id,item_id,rating\n1,2,4\n1,3,\n",
            r"bad\.csv, line 3, column 'rating': an empty value is not a number",
        ),
        ("user_id,item_id\n1,2\n,3\n", r"bad\.csv, line 3, column 'user_id': the id is empty"),
        (
            "user_id,item_id,timestamp\n1,2,10\n1,3,soon\n",
            r"bad\.csv, line 3, column 'timestamp': 'soon' is not a time",
        ),
        (
            "user_id,item_id,timestamp\n1,2,2020-01-01\n1,3,someday\n",
            r"line 3, column 'timestamp': 'someday'",
        ),
        ("user_id,item_id\n1,2\n1,2,3,4\n", r"bad\.csv, line 3: expected 2 fields as in the header, found 4"),
        ('user_id,item_id\n1,"2\n', r"bad\.csv could not be parsed as csv: .*EOF inside string"),
        ("user_id,item_id\n\n\n", r"bad\.csv has a header but only blank lines"),
        ("\ufeff\n\n", r"bad\.csv has no header line"),
    ],
)
def test_table_errors_name_file_and_row(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=pattern):
        _table(path)


def test_table_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data file .*nothing\.csv does not exist; set data\.path"):
        _table(tmp_path / "nothing.csv")


def test_table_wrong_encoding_names_line_and_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("user_id,item_id\nu1,café\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv, line 2: byte 0xe9 .* is not valid utf-8 \(tried utf-8"):
        _table(path)


def test_parquet_fractional_id_names_row(tmp_path):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"user_id": [1.0, 2.5], "item_id": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match=r"ids\.parquet, row 2, column 'user_id': id 2\.5 is not an integer"):
        _table(path, file_format="parquet")


def test_compressed_csv(tmp_path):
    import gzip

    path = tmp_path / "ratings.csv.gz"
    path.write_bytes(gzip.compress(b"user_id,item_id\nu1,007\n"))
    assert _table(path).interactions["item"].tolist() == ["007"]


# ------------------------------------------------------------------- values that were read wrong


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("user_id,item_id,rating\n1,2,3,4\n5,6,7,8\n", 2),  # pandas made column 1 the index
        ("user_id,item_id,rating\n0,2,3,4\n1,6,7,8\n", 2),  # ... and 0, 1 looked like a default index
        ("user_id,item_id,rating\nu1,i1,4,\nu2,i2,5,\n", 2),  # a separator ending every line
        ("user_id,item_id,rating\nu1,i1,4\nu2,i2,5,9\n", 3),
        ("user_id,item_id,rating\nu1,i1,4\n\nu2,i2,5,9\n", 4),
    ],
)
def test_row_with_more_fields_than_header_names_the_line(tmp_path, content, line):
    path = tmp_path / "extra.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=rf"extra\.csv, line {line}: expected 3 fields as in the header, found 4"):
        _table(path)


def test_row_with_fewer_fields_leaving_an_id_empty_names_the_line(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("user_id,item_id,rating\nu1,i1,4\nu2\n")
    with pytest.raises(DataError, match=r"short\.csv, line 3, column 'item_id': the id is empty"):
        _table(path, rating_column="")


@pytest.mark.parametrize(
    ("ids", "pattern"),
    [
        ([1.0, 2.0**63], r"row 2, column 'user_id': id 9\.223372036854776e\+18 is outside the int64 range"),
        ([1.0, 1e300], r"row 2, column 'user_id': id 1e\+300 is outside the int64 range"),
        ([-(2.0**63) * 2, 1.0], r"row 1, column 'user_id': id -1\.8446744073709552e\+19 is outside"),
        ([-(2.0**63), 1.0], r"row 1, column 'user_id': id -9\.223372036854776e\+18 is outside"),
        ([float("inf"), 1.0], r"row 1, column 'user_id': id inf is outside"),
        (np.array([1, 2**63 + 5], np.uint64), r"row 2, column 'user_id': id 9223372036854775813 is larger than"),
    ],
)
def test_parquet_ids_outside_int64_name_row_and_column(tmp_path, ids, pattern):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"user_id": ids, "item_id": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match=rf"ids\.parquet, {pattern}"):
        _table(path, file_format="parquet")


def test_parquet_float_ids_inside_int64_stay_exact(tmp_path):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"user_id": [2.0**62, -(2.0**62)], "item_id": [1, 2]}).to_parquet(path)
    assert _table(path, file_format="parquet").interactions["user"].tolist() == [2**62, -(2**62)]


@pytest.mark.parametrize(
    ("timestamp", "pattern"),
    [
        ("1e19", r"line 3, column 'timestamp': timestamp 1e\+19 is outside the int64 range"),
        ("-1e19", r"line 3, column 'timestamp': timestamp -1e\+19 is outside the int64 range"),
        ("9.3e18", r"line 3, column 'timestamp': timestamp 9\.3e\+18 is outside the int64 range"),
        ("10000000000000000000", r"line 3, column 'timestamp': timestamp 10000000000000000000 is larger than"),
        ("-9223372036854775809", r"line 3, column 'timestamp': timestamp -9\.223372036854776e\+18 is outside"),
        ("1e400", r"line 3, column 'timestamp': inf is not a timestamp"),
    ],
)
def test_timestamps_outside_int64_name_file_line_and_column(tmp_path, timestamp, pattern):
    path = tmp_path / "times.csv"
    path.write_text(f"user_id,item_id,timestamp\nu1,i1,100\nu2,i2,{timestamp}\n")
    with pytest.raises(DataError, match=rf"times\.csv, {pattern}"):
        _table(path)


def test_far_dates_read_as_seconds(tmp_path):
    """Dates past 2262 overflowed nanoseconds on the way to seconds; they fit int64 seconds."""
    path = tmp_path / "dates.csv"
    path.write_text("user_id,item_id,timestamp\nu1,i1,9999-12-31 23:59:59\nu2,i2,1000-01-01\n")
    assert _table(path).interactions["timestamp"].tolist() == [253_402_300_799, -30_610_224_000]
    stored = tmp_path / "dates.parquet"
    moments = np.array(["9999-12-31T23:59:59", "1969-12-31T23:59:59.5"], "datetime64[ms]")
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": moments}).to_parquet(stored)
    assert _table(stored, file_format="parquet").interactions["timestamp"].tolist() == [253_402_300_799, -1]


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [([[1, 2], [9, 10]], "list<element: int64>"), ([{"a": 1}, {"a": 2}], "struct<a: int64>")],
)
def test_parquet_nested_id_column_is_refused(tmp_path, values, arrow_type):
    path = tmp_path / "nested.parquet"
    pd.DataFrame({"user_id": values, "item_id": [1, 2]}).to_parquet(path)
    pattern = rf"nested\.parquet, column 'user_id': parquet type {re.escape(arrow_type)} is not one value per row; ids"
    with pytest.raises(DataError, match=pattern + " must be integers or strings"):
        _table(path, file_format="parquet")


@pytest.mark.parametrize("column", ["rating", "timestamp"])
@pytest.mark.parametrize("values", [[[1.0], [2.0]], [{"a": 1}, {"a": 2}]], ids=["list", "struct"])
def test_parquet_nested_rating_or_timestamp_is_refused(tmp_path, column, values):
    path = tmp_path / "nested.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], column: values}).to_parquet(path)
    with pytest.raises(DataError, match=rf"nested\.parquet, column '{column}': parquet type .* is not one value"):
        _table(path, file_format="parquet")


def test_object_id_values_that_are_not_ids_are_refused():
    """Values read by another route than the parquet schema check still never become text like "[1 2]"."""
    from graphrec_jax.data.readers import id_column

    column = pd.Series(["u1", np.array([1, 2])], dtype=object)
    with pytest.raises(DataError, match=r"row 2, column 'user': ndarray value array\(\[1, 2\]\); ids must be"):
        id_column(column, lambda row, name: f"row {row + 1}, column {name!r}", "user")


@pytest.mark.parametrize(
    ("column", "values", "pattern"),
    [
        ("rating", [True, False], r"row 1, column 'rating': True is not a number \(the rating\); the column holds"),
        ("timestamp", [True, False], r"row 1, column 'timestamp': True is not a timestamp"),
        ("user_id", [True, False], r"row 1, column 'user_id': the column holds true/false values"),
        ("rating", pd.to_datetime(["2020-01-01", "2020-01-02"]), r"row 1, column 'rating': .* is not a number"),
        ("timestamp", pd.to_timedelta([1, 2], unit="s"), r"row 1, column 'timestamp': .* is not a timestamp"),
    ],
)
def test_parquet_columns_that_would_read_as_wrong_numbers_are_refused(tmp_path, column, values, pattern):
    path = tmp_path / "typed.parquet"
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2]})
    frame[column] = values
    frame.to_parquet(path)
    with pytest.raises(DataError, match=rf"typed\.parquet, {pattern}"):
        _table(path, file_format="parquet")


def test_csv_of_true_false_ratings_is_refused(tmp_path):
    path = tmp_path / "flags.csv"
    path.write_text("user_id,item_id,rating\nu1,i1,True\nu2,i2,False\n")
    with pytest.raises(DataError, match=r"flags\.csv, line 2, column 'rating': True is not a number"):
        _table(path)


@pytest.mark.parametrize(
    ("name", "data", "pattern"),
    [
        ("cut.csv.gz", gzip.compress(b"user_id,item_id\nu1,i1\n")[:-10], r" could not be decompressed as \.gz \(EOF"),
        ("plain.csv.gz", b"user_id,item_id\nu1,i1\n", r" could not be decompressed as \.gz \(BadGzipFile"),
        ("plain.csv.bz2", b"user_id,item_id\n", r" could not be decompressed as \.bz2"),
        ("plain.csv.xz", b"user_id,item_id\n", r" could not be decompressed as \.xz"),
        ("plain.csv.zip", b"user_id,item_id\n", r" could not be decompressed as \.zip"),
        ("latin.csv.gz", gzip.compress("user_id,item_id\nu1,café\n".encode("latin-1")), r", line 2: byte 0xe9"),
    ],
    ids=["cut_gzip", "not_gzip", "not_bz2", "not_xz", "not_zip", "latin1_in_gzip"],
)
def test_damaged_compressed_files_raise_data_errors(tmp_path, name, data, pattern):
    """pandas let codec errors (EOFError, BadGzipFile, LZMAError, ...) escape; each is a DataError now."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=re.escape(name) + pattern):
        _table(path)
