"""Property tests of graphrec_jax/data/readers.py `read_table`: mutated files read exactly or raise DataError.

Three generators: csv/tsv tables changed cell by cell and row by row, where an oracle says
what the reader must return or that it must refuse the file; the same files changed byte by
byte (bad quotes, random bytes, cut-offs, other encodings), where a read must at least give
well-formed columns; and parquet files whose columns have random arrow types. Examples are
derandomized, so CI always runs the same ones. A RuntimeWarning (numpy's warning for a
value that overflowed in a cast) fails the test like an exception.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from graphrec_jax.data import DataError
from graphrec_jax.data.readers import RawData, read_table

COLUMNS = {"user_column": "user_id", "item_column": "item_id", "rating_column": "rating", "timestamp_column": "time"}
REQUIRED = ("user_id", "item_id", "rating", "time")
PROPERTY_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
INT64_LIMIT = 2**63
# Exact values this close to the int64 bounds may or may not survive a float column; either outcome is right.
BORDER = 2**62

ID_SPECIALS = [
    "007", "NaN", "nan", "NULL", "None", "N/A", "#N/A", "inf", "1.0", "+7", "-0", "1e400", "True",
    "99999999999999999999", "9223372036854775808", "a b", " padded ", "café", "ñandú", 'say "hi"', "x,y", "x\ty",
    "'", "", " ",
]  # fmt: skip
NUMBER_SPECIALS = [
    "", " ", "NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "abc", "True", "1,5", "0", "-0", " 4",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "99999999999999999999", "1e19", "-1e19", "9.3e18",
    "2021-03-04", "9999-12-31 23:59:59",
]  # fmt: skip

ids = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, 10**6).map(str),
    st.from_regex(r"[a-z][a-z0-9_\-]{0,7}", fullmatch=True),
    st.sampled_from(ID_SPECIALS),
)
# Special values are one draw in four: a table of six rows then still often reads.
ratings = st.one_of(
    st.integers(-5, 10).map(str),
    st.integers(0, 10).map(str),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False).map(repr),
    st.sampled_from(NUMBER_SPECIALS),
)
number_times = st.one_of(
    st.integers(-(2**53), 2**53).map(str),
    st.integers(0, 2 * 10**9).map(str),
    st.floats(-1e15, 1e15, allow_nan=False, allow_subnormal=False).map(repr),
    st.sampled_from(NUMBER_SPECIALS),
)
date_times = st.builds(
    lambda moment, with_time: moment.strftime("%Y-%m-%d %H:%M:%S" if with_time else "%Y-%m-%d"),
    st.datetimes(datetime.datetime(1000, 1, 1), datetime.datetime(9999, 12, 31)),
    st.booleans(),
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def read(path: Path, file_format: str) -> RawData | DataError:
    """`read_table` with numpy's overflow warnings raised; a DataError is returned, anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            raw = read_table(path, file_format=file_format, **COLUMNS)
        except DataError as error:
            assert str(path) in str(error) and "\n" not in str(error), str(error)
            event("outcome: DataError")
            return error
    event("outcome: read")
    return raw


def check_well_formed(raw: RawData, max_rows: int) -> None:
    """What every successful read returns: ids without blanks, finite ratings, int64 seconds."""
    table = raw.interactions
    # A damaged header can lose the rating or time column; both are optional.
    assert table.columns.tolist()[:2] == ["user", "item"]
    assert set(table.columns) <= {"user", "item", "rating", "timestamp"}
    assert 1 <= len(table) <= max_rows
    for column in ("user", "item"):
        values = table[column].to_numpy()
        if values.dtype == object:
            assert all(isinstance(value, str) and value and value == value.strip() for value in values)
        else:
            assert values.dtype == np.int64
    if "rating" in table:
        assert table["rating"].dtype == np.float64 and np.isfinite(table["rating"]).all()
    if "timestamp" in table:
        assert table["timestamp"].dtype == np.int64


# ------------------------------------------------------------------------ the csv/tsv oracle


def as_number(cell: str) -> int | float | None:
    """The exact value of a cell the way pandas reads numbers, None for text."""
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def expected_ids(cells: list[str]) -> list[str] | None:
    stripped = [cell.strip() for cell in cells]
    return stripped if all(stripped) else None


def expected_ratings(cells: list[str]) -> list[float] | None:
    values = [as_number(cell) for cell in cells]
    if any(value is None or not math.isfinite(value) for value in values):
        return None
    return [float(value) for value in values]


def expected_times(cells: list[str]) -> tuple[list[int], bool] | None:
    """(seconds, whether a value lies so near the int64 bounds that a refusal is right too), or None to refuse."""
    values = [as_number(cell) for cell in cells]
    if all(value is not None for value in values):
        if not all(math.isfinite(value) for value in values):
            return None
        exact = [math.floor(value) for value in values]
        if any(not -INT64_LIMIT <= value < INT64_LIMIT for value in exact):
            return None
        return exact, any(abs(value) >= BORDER for value in exact)
    if any(value is not None for value in values) or not all(cell.strip() for cell in cells):
        return None  # numbers and text mixed, or an empty cell
    seconds = []
    for cell in cells:
        try:
            moment = datetime.datetime.fromisoformat(cell.strip())
        except ValueError:
            return None
        seconds.append((moment - datetime.datetime(1970, 1, 1)) // datetime.timedelta(seconds=1))
    return seconds, False


@st.composite
def mutated_tables(draw):
    """A csv/tsv file as bytes and what `read_table` must return for it (None: a DataError)."""
    file_format = draw(st.sampled_from(["csv", "tsv"]))
    separator = "," if file_format == "csv" else "\t"
    header = list(REQUIRED)
    draw(st.randoms(use_true_random=False)).shuffle(header)
    if draw(st.booleans()):  # an unused column, never last: a short row then always empties a used one
        header.insert(draw(st.integers(0, len(header) - 1)), "note")
    num_rows = draw(st.integers(1, 6))
    times = date_times if draw(st.booleans()) else number_times
    cells = {
        "user_id": draw(st.lists(ids, min_size=num_rows, max_size=num_rows)),
        "item_id": draw(st.lists(ids, min_size=num_rows, max_size=num_rows)),
        "rating": draw(st.lists(ratings, min_size=num_rows, max_size=num_rows)),
        "time": draw(st.lists(times, min_size=num_rows, max_size=num_rows)),
        "note": draw(st.lists(st.sampled_from(["", "x", "1", "NaN"]), min_size=num_rows, max_size=num_rows)),
    }
    rows = [[cells[name][row] for name in header] for row in range(num_rows)]
    # Rows given one field more or one fewer than the header (at most one change per row).
    num_changed = min(num_rows, draw(st.sampled_from([0, 0, 0, 1, 2])))
    changed = draw(st.lists(st.integers(0, num_rows - 1), min_size=num_changed, max_size=num_changed, unique=True))
    for row in changed:
        if draw(st.booleans()):
            rows[row].append(draw(st.sampled_from(["", "extra", "5"])))
        else:
            del rows[row][draw(st.integers(0, len(rows[row]) - 1))]

    def line(fields: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=separator, lineterminator="").writerow(fields)
        return buffer.getvalue()

    lines = [line(header)] + [line(fields) for fields in rows]
    blank_lines = draw(st.lists(st.tuples(st.integers(1, len(lines)), st.sampled_from(["", "   ", "sep"]))))
    for position, blank in sorted(blank_lines, reverse=True):
        lines.insert(position, separator * (len(header) - 1) if blank == "sep" else blank)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")

    if encoding == "utf-16" or (encoding == "latin-1" and not text.isascii()):
        return file_format, data, None
    # A row whose fields are all empty is a blank line to the reader, even when fields are missing.
    kept = [row for row in range(num_rows) if any(cell.strip() for cell in rows[row])]
    if any(row in changed for row in kept) or not kept:
        return file_format, data, None  # more or fewer fields than the header, or no rows
    kept_cells = {name: [cells[name][row] for row in kept] for name in REQUIRED}
    users, items = expected_ids(kept_cells["user_id"]), expected_ids(kept_cells["item_id"])
    rating_values, times_and_border = expected_ratings(kept_cells["rating"]), expected_times(kept_cells["time"])
    if users is None or items is None or rating_values is None or times_and_border is None:
        return file_format, data, None
    return file_format, data, {"user": users, "item": items, "rating": rating_values, "timestamp": times_and_border}


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(case=mutated_tables())
def test_mutated_tables_read_exactly_or_raise_data_error(folder, case):
    file_format, data, expected = case
    path = folder / f"mutated.{file_format}"
    path.write_bytes(data)
    result = read(path, file_format)
    if expected is None:
        assert isinstance(result, DataError), f"expected a DataError, read {result.interactions.to_dict('list')}"
        return
    seconds, near_bounds = expected["timestamp"]
    if near_bounds and isinstance(result, DataError):
        assert "int64 range" in str(result) or "largest int64" in str(result), str(result)
        return
    assert isinstance(result, RawData), str(result)
    table = result.interactions
    assert table["user"].tolist() == expected["user"]
    assert table["item"].tolist() == expected["item"]
    np.testing.assert_allclose(table["rating"].to_numpy(), expected["rating"], rtol=1e-12)
    assert table["timestamp"].dtype == np.int64
    if near_bounds:  # a float column rounds to 53 bits
        pairs = zip(table["timestamp"].tolist(), seconds, strict=True)
        assert all(abs(got - want) <= abs(want) * 2.0**-52 for got, want in pairs)
    else:
        assert table["timestamp"].tolist() == seconds


# ------------------------------------------------------------------------ byte-level damage

VALID_CSV = (
    'user_id,item_id,rating,time\nu1,i1,4,1600000000\nu2,i2,3.5,1600000100\n"u,3",i1,5,1600000200\nu1,i3,1,1600000300\n'
)


@st.composite
def damaged_bytes(draw):
    """A small valid table after 1-3 byte-level changes, maybe re-encoded, maybe gzipped (and cut short)."""
    file_format = draw(st.sampled_from(["csv", "tsv"]))
    text = VALID_CSV if file_format == "csv" else VALID_CSV.replace('"u,3"', "u3").replace(",", "\t")
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["bytes", "quote", "delete", "newline", "separator", "number", "truncate", "bom"]))
        if kind == "bytes":
            data[position:position] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "quote":
            data[position:position] = draw(st.sampled_from([b'"', b"'", b'""', b'"\n']))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif kind == "newline":
            data[position:position] = draw(st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n"]))
        elif kind == "separator":
            data[position:position] = draw(st.sampled_from([b",", b"\t", b";", b",,"]))
        elif kind == "number":
            data[position:position] = draw(st.sampled_from(NUMBER_SPECIALS)).encode()
        elif kind == "truncate":
            del data[position:]
        else:
            data[0:0] = b"\xef\xbb\xbf"
    encoding = draw(st.sampled_from(["none", "none", "none", "latin-1", "utf-16"]))
    if encoding != "none":
        data = bytearray(bytes(data).decode("utf-8", errors="replace").encode(encoding, errors="replace"))
    suffix = draw(st.sampled_from(["", "", "", ".gz", ".gz_cut"]))
    if suffix:
        data = gzip.compress(bytes(data))
        data = data[: draw(st.integers(0, len(data) - 1))] if suffix == ".gz_cut" else data
    return file_format, suffix[:3], bytes(data)


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(case=damaged_bytes())
def test_damaged_bytes_read_well_formed_or_raise_data_error(folder, case):
    file_format, suffix, data = case
    path = folder / f"damaged.{file_format}{suffix}"
    path.write_bytes(data)
    result = read(path, file_format)
    if isinstance(result, RawData):
        text = gzip.decompress(data) if suffix else data
        check_well_formed(result, max_rows=max(text.count(b"\n"), text.count(b"\r")) + 1)


# ------------------------------------------------------------------------------- parquet

PARQUET_KINDS = [
    "int64", "int8", "uint64", "float", "float_specials", "string", "bool", "list", "struct", "map",
    "dictionary", "binary", "timestamp_s", "timestamp_ms", "timestamp_ns_utc", "date32", "nullable_int", "null",
]  # fmt: skip
UINT64_MAX = 2**64 - 1


def parquet_column(draw, kind: str, num_rows: int) -> pa.Array:
    """`[num_rows]` values of one arrow type."""

    def values(strategy):
        return draw(st.lists(strategy, min_size=num_rows, max_size=num_rows))

    if kind == "int64":
        return pa.array(values(st.integers(-(2**63), 2**63 - 1)), pa.int64())
    if kind == "int8":
        return pa.array(values(st.integers(-128, 127)), pa.int8())
    if kind == "uint64":
        return pa.array(values(st.integers(0, UINT64_MAX)), pa.uint64())
    if kind == "float":
        return pa.array(values(st.integers(-(10**6), 10**6).map(float)), pa.float64())
    if kind == "float_specials":
        specials = st.sampled_from([math.nan, math.inf, -math.inf, 2.0**63, -(2.0**63), 1e19, -1e300, 0.5, -1.5])
        return pa.array(values(st.one_of(st.floats(allow_nan=True), specials)), pa.float64())
    if kind == "string":
        return pa.array(values(st.one_of(ids, st.text(max_size=5))), pa.string())
    if kind == "bool":
        return pa.array(values(st.booleans()), pa.bool_())
    if kind == "list":
        return pa.array(values(st.lists(st.integers(0, 20), max_size=3)), pa.list_(pa.int64()))
    if kind == "struct":
        return pa.array(values(st.fixed_dictionaries({"a": st.integers(0, 9)})), pa.struct([("a", pa.int64())]))
    if kind == "map":
        entries = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 9)), max_size=2)
        return pa.array(values(entries), pa.map_(pa.string(), pa.int64()))
    if kind == "dictionary":
        return pa.array(values(st.sampled_from(["a", "b", "7"]))).dictionary_encode()
    if kind == "binary":
        return pa.array(values(st.binary(max_size=4)), pa.binary())
    if kind == "timestamp_s":
        return pa.array(values(st.integers(-(10**11), 10**11)), pa.timestamp("s"))
    if kind == "timestamp_ms":
        return pa.array(values(st.integers(-(10**14), 10**14)), pa.timestamp("ms"))
    if kind == "timestamp_ns_utc":
        return pa.array(values(st.integers(-(2**62), 2**62)), pa.timestamp("ns", tz="UTC"))
    if kind == "date32":
        return pa.array(values(st.integers(-719_162, 2_932_896)), pa.date32())  # years 1 to 9999
    if kind == "nullable_int":
        return pa.array(values(st.one_of(st.none(), st.integers(-5, 5))), pa.int64())
    return pa.nulls(num_rows)


@st.composite
def parquet_tables(draw):
    num_rows = draw(st.integers(1, 5))
    usual = {  # half the columns hold a type the reader accepts, so that reads are checked too
        "user_id": ["int64", "int8", "string", "dictionary", "float"],
        "item_id": ["int64", "string", "dictionary", "nullable_int"],
        "rating": ["float", "int8"],
        "time": ["int64", "timestamp_s", "timestamp_ms", "timestamp_ns_utc", "date32", "float"],
    }
    kinds = {name: draw(st.sampled_from(usual[name]) | st.sampled_from(PARQUET_KINDS)) for name in REQUIRED}
    columns = {name: parquet_column(draw, kind, num_rows) for name, kind in kinds.items()}
    return kinds, pa.table(columns)


def fits_int64(value: int | float) -> bool:
    """Integers fit from -2^63; a float -2^63 is refused, as every integer just below it rounds to it."""
    return -INT64_LIMIT <= value < INT64_LIMIT if isinstance(value, int) else -INT64_LIMIT < value < INT64_LIMIT


def expected_parquet_ids(kind: str, array: pa.Array) -> list | None | str:
    """The ids an id column must read as, None when the reader must refuse it, "any" when unchecked."""
    if kind in ("int64", "int8", "uint64", "float", "float_specials", "nullable_int"):
        values = array.to_pylist()
        if any(value is None or not math.isfinite(value) for value in values):
            return None
        if any(value != int(value) or not fits_int64(value) for value in values):
            return None
        return [int(value) for value in values]
    if kind in ("string", "dictionary"):
        stripped = [value.strip() for value in array.to_pylist()]
        return stripped if all(stripped) else None
    if kind in ("bool", "list", "struct", "map", "binary", "null"):
        return None
    return "any"  # dates as ids read as their text; not a case worth an exact oracle


def expected_parquet_seconds(kind: str, array: pa.Array) -> list | None | str:
    if kind in ("string", "dictionary"):
        return "any"  # text may or may not be dates
    if kind in ("list", "struct", "map", "binary", "bool", "null"):
        return None
    if kind.startswith("timestamp"):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[array.type.unit]
        return [value // per_second for value in array.cast(pa.int64()).to_pylist()]
    if kind == "date32":
        return [value * 86_400 for value in array.cast(pa.int32()).to_pylist()]
    values = array.to_pylist()
    if any(value is None or not math.isfinite(value) for value in values):
        return None
    if not all(fits_int64(value) for value in values):
        return None
    return [math.floor(value) for value in values]


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(case=parquet_tables())
def test_parquet_columns_of_any_type_read_exactly_or_raise_data_error(folder, case):
    kinds, table = case
    path = folder / "random.parquet"
    pyarrow.parquet.write_table(table, path)
    result = read(path, "parquet")
    expected = {
        "user": expected_parquet_ids(kinds["user_id"], table["user_id"].combine_chunks()),
        "item": expected_parquet_ids(kinds["item_id"], table["item_id"].combine_chunks()),
        "timestamp": expected_parquet_seconds(kinds["time"], table["time"].combine_chunks()),
    }
    rating_kind = kinds["rating"]
    if rating_kind in ("int64", "int8", "uint64", "float", "float_specials", "nullable_int"):
        values = table["rating"].to_pylist()
        finite = all(value is not None and math.isfinite(value) for value in values)
        expected["rating"] = [float(value) for value in values] if finite else None
    else:
        expected["rating"] = None  # text, dates, nested values or booleans are not ratings
    if rating_kind in ("string", "dictionary"):
        expected["rating"] = "any"  # digits in text are numbers
    if any(value is None for value in expected.values()):
        assert isinstance(result, DataError), f"{kinds}: read {result.interactions.to_dict('list')}"
        return
    if isinstance(result, DataError):
        assert "any" in expected.values(), f"{kinds}: {result}"
        return
    check_well_formed(result, max_rows=len(table))
    for column, values in expected.items():
        if values == "any":
            continue
        if column == "rating":
            np.testing.assert_allclose(result.interactions[column].to_numpy(), values, rtol=1e-12)
        else:
            assert result.interactions[column].tolist() == values, (column, kinds)
