"""File formats in, raw tables out: csv/tsv/parquet tables, MovieLens folders, LightGCN-format files.

Readers return ids as they are written in the file (strings, or int64 where the format
defines integer ids) and leave id maps, filtering and splits to `prepare.py`. Every
problem is a `DataError` naming the file, the line (1-based, header included) or
column, what was expected and how to fix it. Amazon JSON folders live in `amazon.py`.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError

# An id is read as an integer only when it is written the way Python prints that integer,
# so "007", "7.0" and "+7" stay strings and round-trip to the exact text of the file.
_CANONICAL_INTEGER = r"-?(?:0|[1-9][0-9]{0,17})"
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")
# Floats at or past these bounds do not fit int64; numpy would turn them into INT64_MIN.
_INT64_LIMIT = 2.0**63
# The C parser's message for a row with more fields than the first row.
_FIELD_COUNT_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
MOVIELENS_GENRES = (
    "unknown, Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama, Fantasy, "
    "Film-Noir, Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western"
).split(", ")


@dataclasses.dataclass
class RawData:
    """Interactions with raw ids, in file order, and optional item text.

    Attributes:
      interactions: columns "user" and "item" (int64 or str ids), optional "rating" (float64)
        and "timestamp" (int64 seconds); one row per interaction, in file order.
      source: the file or folder read, for messages.
      item_text: raw item id -> {field: text}, or None when the format has no text.
      name: a short name for logs.
    """

    interactions: pd.DataFrame
    source: str
    item_text: dict | None = None
    name: str = ""


@dataclasses.dataclass
class SplitFile:
    """One file in LightGCN line format (`user item item ...`), flattened to pairs.

    Attributes:
      path: the file read.
      users, items: `[n]` raw ids of each pair (int64, or str when read with `integer_ids=False`).
      lines: `[n]` int64 1-based line number of each pair.
      listed_users: `[num_lines]` the user heading each non-blank line, users with no items included.
      listed_lines: `[num_lines]` int64 line number of each listed user.
    """

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    listed_users: np.ndarray
    listed_lines: np.ndarray


def require_file(path: Path, what: str, fix: str) -> Path:
    """Returns `path` if it is a file, else raises a `DataError` saying what was expected there."""
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"{what} {path} {where}; {fix}")
    return path


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """Reads `path` as `encoding`; a decoding failure names the line and byte and the encoding tried."""
    return _decode(path.read_bytes(), path, encoding)


def _decompressed(path: Path) -> bytes:
    """The bytes of `path`, decompressed by its extension (.gz, .bz2, .xz, .zip, .zst)."""
    import bz2
    import gzip
    import lzma
    import zipfile

    suffix = path.suffix.lower()
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [member for member in archive.namelist() if not member.endswith("/")]
                if len(members) != 1:
                    raise DataError(f"{path} holds {len(members)} files; expected a zip archive of one table")
                return archive.read(members[0])
        if suffix == ".zst":
            try:
                import zstandard
            except ImportError:
                raise DataError(
                    f"{path}: reading .zst files needs the zstandard package; `pip install zstandard`, "
                    "or decompress the file and set data.path to the result"
                ) from None
            with zstandard.ZstdDecompressor().stream_reader(path.open("rb")) as reader:
                return reader.read()
        decompress = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}[suffix]
        return decompress(path.read_bytes())
    except DataError:
        raise
    except Exception as error:  # each codec has its own error types (OSError, EOFError, LZMAError, ...)
        raise DataError(
            f"{path} could not be decompressed as {suffix} ({type(error).__name__}: {error}); "
            "check that the file is complete and its extension names its compression"
        ) from None


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}, line {line}: byte 0x{data[error.start]:02x} at offset {error.start} is not valid "
            f"{encoding} (tried {encoding}: {error.reason}); re-save the file as {encoding}"
        ) from None


def infer_separator(path: Path, file_format: str, separator: str) -> str:
    """`separator` if set, else from the extension (.csv ",", .tsv/.txt tab), else from the format."""
    if separator:
        return "\t" if separator in ("\\t", "tab") else separator
    suffixes = [suffix.lower() for suffix in path.suffixes]
    extension = suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in _COMPRESSED else (suffixes or [""])[-1]
    if extension == ".csv":
        return ","
    if extension in (".tsv", ".txt"):
        return "\t"
    return "\t" if file_format == "tsv" else ","


def read_table(
    path: Path,
    *,
    file_format: str,
    user_column: str,
    item_column: str,
    rating_column: str = "",
    timestamp_column: str = "",
    separator: str = "",
) -> RawData:
    """Reads a csv/tsv/parquet table of interactions. Not jittable (host I/O).

    Ids are kept as written (strings; parquet integer columns stay integers). The rating and
    timestamp columns are optional: a missing one is simply absent from the result.
    """
    require_file(path, "data file", f"set data.path to a {file_format} file")
    schema = None
    if file_format == "parquet":
        import pyarrow.parquet

        try:
            table = pd.read_parquet(path)
            schema = pyarrow.parquet.read_schema(path)
        except Exception as error:  # pyarrow raises several unrelated types for bad files
            raise DataError(f"{path} is not a readable parquet file ({error}); check data.format") from None
        first_line, row_word = 1, "row"
    else:
        compressed = path.suffix.lower() in _COMPRESSED
        text = _decode(_decompressed(path), path, "utf-8") if compressed else decode_text(path)
        if not text.strip():
            raise DataError(f"{path} is empty; expected a header line naming the columns, then one row each")
        source = io.StringIO(text)
        options = {
            "sep": infer_separator(path, file_format, separator),
            "keep_default_na": False,
            "skip_blank_lines": False,
            "skipinitialspace": True,
        }
        try:
            # pandas takes a first row with more fields than the header as index + columns,
            # which shifts every column (users read as items) without a word; read as plain
            # rows, the header sets the field count and a longer first row is a parse error.
            pd.read_csv(source, header=None, nrows=2, dtype=str, **options)
            source.seek(0)
            table = pd.read_csv(
                source,
                dtype={user_column: str, item_column: str},  # ids stay text as written
                na_values=[""],
                index_col=False,  # never an implicit index column, whatever the rows hold
                **options,
            )
        except pd.errors.ParserError as error:
            raise DataError(_parser_error_message(path, file_format, error)) from None
        except pd.errors.EmptyDataError:  # e.g. only a byte-order mark and line breaks
            raise DataError(
                f"{path} has no header line; expected a header naming the columns, then one row each"
            ) from None
        first_line, row_word = 2, "line"  # line 1 is the header
    if table.empty:
        raise DataError(f"{path} has a header but no rows; expected one interaction per row")
    wanted = {"data.user_column": user_column, "data.item_column": item_column}
    missing = [f"{name!r} (set {key})" for key, name in wanted.items() if name not in table.columns]
    if missing:
        found = ", ".join(repr(str(column)) for column in table.columns)
        raise DataError(
            f"{path} has no column {' and no column '.join(missing)}; columns found: {found}. "
            "The file needs a header line; set the data.*_column keys to its column names"
        )
    if schema is not None:
        numbers = [name for name in (rating_column, timestamp_column) if name]
        _check_parquet_types(path, schema, [user_column, item_column], numbers)
    lines = np.arange(len(table), dtype=np.int64) + first_line
    if file_format != "parquet":
        blank = _blank_rows(table)
        table, lines = table[~blank], lines[~blank]
        if table.empty:
            raise DataError(f"{path} has a header but only blank lines; expected one interaction per row")

    def where(row: int, column: str) -> str:
        return f"{path}, {row_word} {lines[row]}, column {column!r}"

    out = {
        "user": id_column(table[user_column], where, user_column),
        "item": id_column(table[item_column], where, item_column),
    }
    if rating_column and rating_column in table.columns:
        out["rating"] = _number_column(table[rating_column], where, rating_column, "a number (the rating)")
    if timestamp_column and timestamp_column in table.columns:
        out["timestamp"] = _timestamp_column(table[timestamp_column], where, timestamp_column)
    return RawData(pd.DataFrame(out), str(path), name=path.name.split(".")[0])


def _blank_rows(table: pd.DataFrame) -> np.ndarray:
    """`[n]` bool: rows with no value in any field (blank lines, lines of separators only)."""
    empty = table.isna().to_numpy()
    for index, name in enumerate(table.columns):
        column = table[name]
        if pd.api.types.is_string_dtype(column.dtype):
            # pandas leaves "" rather than NaN in a column it fell back to text for (a number past uint64)
            empty[:, index] |= column.eq("").to_numpy(dtype=bool, na_value=True)
    return empty.all(axis=1)


def _parser_error_message(path: Path, file_format: str, error: Exception) -> str:
    """One line naming the line whose field count differs, when the parser says which."""
    found = _FIELD_COUNT_ERROR.search(str(error))
    if found:
        expected, line, saw = found.groups()
        return (
            f"{path}, line {line}: expected {expected} fields as in the header, found {saw}; fix that row "
            "(a separator inside a value needs quotes) or check data.separator"
        )
    detail = " ".join(str(error).split())
    return f"{path} could not be parsed as {file_format}: {detail}; check data.separator and the quoting"


def _check_parquet_types(path: Path, schema, id_columns: list[str], number_columns: list[str]) -> None:
    """Rejects nested (list, struct, map) and binary columns: no single id or number per row."""
    import pyarrow as pa

    for name in id_columns + number_columns:
        index = schema.get_field_index(name)
        if index < 0:
            continue
        field_type = schema.field(index).type
        value_type = field_type.value_type if pa.types.is_dictionary(field_type) else field_type
        binary = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
        if pa.types.is_nested(value_type) or binary or pa.types.is_fixed_size_binary(value_type):
            fix = (
                "ids must be integers or strings: write the column as int64 or string"
                if name in id_columns
                else "write one number (for timestamps: a number or a date) per row"
            )
            raise DataError(f"{path}, column {name!r}: parquet type {field_type} is not one value per row; {fix}")


def id_column(column: pd.Series, where, name: str, *, needs: str = "a user and an item id") -> np.ndarray:
    """Ids as `[n]` int64 (integer or integral float columns) or str objects, stripped of spaces.

    `where(row, name)` says where a row is ("FILE, line N, column 'NAME'") for the `DataError`s:
    an empty or blank id (each row `needs` its ids), booleans, fractional or out-of-range
    numbers, and values that are neither integers nor strings (parquet lists, bytes)."""
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"{where(row, name)}: the id is empty; every row needs {needs}")
    if pd.api.types.is_bool_dtype(column.dtype):
        raise DataError(f"{where(0, name)}: the column holds true/false values; ids must be integers or strings")
    if pd.api.types.is_integer_dtype(column.dtype):
        _check_unsigned_range(column, where, name, "id")
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise DataError(
                f"{where(row, name)}: id {float(values[row])!r} is not an integer; ids must be integers or text"
            )
        _check_float_range(values, where, name, "id")
        return values.astype(np.int64)
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in ("string", "integer"):
        # Lists, dicts, bytes or floats would become ids like "[ 9 10]" or "b'x'" as text.
        bad = [isinstance(value, bool | np.bool_) or not isinstance(value, str | int | np.integer) for value in column]
        if any(bad):
            row = int(np.argmax(bad))
            value = column.iloc[row]
            raise DataError(
                f"{where(row, name)}: {type(value).__name__} value {_shown(value)[:60]}; ids must be integers "
                "or strings"
            )
    text = column.astype(str).str.strip()
    empty = (text == "").to_numpy()
    if empty.any():
        row = int(np.argmax(empty))
        raise DataError(f"{where(row, name)}: the id is blank; every row needs {needs}")
    return text.to_numpy(dtype=object)


def _check_unsigned_range(column: pd.Series, where, name: str, what: str) -> None:
    """uint64 values past int64's range would wrap around to negative numbers."""
    if pd.api.types.is_unsigned_integer_dtype(column.dtype):
        values = column.to_numpy(dtype=np.uint64)
        too_big = values > np.uint64(np.iinfo(np.int64).max)
        if too_big.any():
            row = int(np.argmax(too_big))
            raise DataError(
                f"{where(row, name)}: {what} {int(values[row])} is larger than 2^63 - 1, the largest int64; "
                f"use smaller {what}s (or write them as text)"
            )


def _check_float_range(values: np.ndarray, where, name: str, what: str) -> None:
    """Floats outside (-2^63, 2^63) have no int64 value (numpy would give INT64_MIN).

    -2^63 itself is refused too: it is what every integer from -2^63 - 1024 to -2^63 rounds to.
    """
    outside = (values >= _INT64_LIMIT) | (values <= -_INT64_LIMIT)
    if outside.any():
        row = int(np.argmax(outside))
        raise DataError(
            f"{where(row, name)}: {what} {float(values[row])!r} is outside the int64 range (-2^63, 2^63); "
            f"fix that row (or write {what}s as text)"
        )


def _shown(value) -> str:
    """A cell as the message shows it: `'five'`, `inf`, `True`, or "an empty value"."""
    if pd.api.types.is_scalar(value) and pd.isna(value):  # a list or array is a value, not a gap
        return "an empty value"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _reject_booleans(column: pd.Series, where, name: str, expected: str) -> None:
    """A column of true/false values parses as bool, which would silently read as 1.0 and 0.0.

    With a blank line in the file the column holds objects (True, NaN, ...) rather than bools.
    """
    boolean = pd.api.types.is_bool_dtype(column.dtype)
    if column.dtype == object and not boolean:
        boolean = pd.api.types.infer_dtype(column, skipna=True) == "boolean"
    if boolean:
        raise DataError(
            f"{where(0, name)}: {_shown(column.iloc[0])} is not {expected}; the column holds true/false values, "
            "point the data.*_column key at another column"
        )


def _reject_temporal(column: pd.Series, where, name: str, expected: str, *, dates_allowed: bool) -> None:
    """Dates and durations convert to counts of nanoseconds, which are no ratings or seconds."""
    dtype = column.dtype
    durations = pd.api.types.is_timedelta64_dtype(dtype) or isinstance(dtype, pd.PeriodDtype)
    if durations or (not dates_allowed and pd.api.types.is_datetime64_any_dtype(dtype)):
        raise DataError(
            f"{where(0, name)}: {_shown(column.iloc[0])} is not {expected}; the column holds {dtype} values, "
            "point the data.*_column key at another column"
        )


def _number_column(column: pd.Series, where, name: str, expected: str) -> np.ndarray:
    _reject_booleans(column, where, name, expected)
    _reject_temporal(column, where, name, expected, dates_allowed=False)
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # the parser met text somewhere in the column; find it
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{where(row, name)}: {_shown(column.iloc[row])} is not {expected}; fix or delete that row, "
            "or point the data.*_column key at another column"
        )
    return values


def _timestamp_column(column: pd.Series, where, name: str) -> np.ndarray:
    """`[n]` int64 seconds from integer/float seconds, datetime columns or parseable date strings."""
    _reject_booleans(column, where, name, "a timestamp")
    _reject_temporal(column, where, name, "a timestamp", dates_allowed=True)
    if pd.api.types.is_integer_dtype(column.dtype) and not column.isna().any():
        _check_unsigned_range(column, where, name, "timestamp")
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        dates = column
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(values).all():
            seconds = np.floor(values)
            _check_float_range(seconds, where, name, "timestamp")
            return seconds.astype(np.int64)
        dates = None
        if numbers.isna().all() and column.notna().all():  # date strings rather than numbers
            dates = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    bad = dates.isna().to_numpy() if dates is not None else ~np.isfinite(values)
    if not bad.any():
        return _seconds(dates)
    row = int(np.argmax(bad))
    raise DataError(
        f"{where(row, name)}: {_shown(column.iloc[row])} is not a timestamp; expected integer seconds or a "
        "date such as 2021-03-04 12:00:00 in every row of the column"
    )


def _seconds(dates: pd.Series) -> np.ndarray:
    """`[n]` int64 seconds since 1970 (UTC), floored, in the column's own unit so no date overflows."""
    if dates.dt.tz is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    values = dates.to_numpy()
    unit, _ = np.datetime_data(values.dtype)
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    return values.view(np.int64) // per_second


def read_movielens(folder: Path) -> RawData:
    """Reads a MovieLens-100K-style folder: `u.data` and, when present, `u.item` (+ `u.genre`).

    Item text has the fields "title" and "genres" (comma-separated genre names).
    """
    if not folder.is_dir():
        raise DataError(f"MovieLens folder {folder} does not exist; set data.path to the folder holding u.data")
    path = require_file(folder / "u.data", "MovieLens ratings file", "data.path must hold u.data")
    text = decode_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; expected tab-separated lines: user, item, rating, timestamp")
    names = ["user", "item", "rating", "timestamp"]
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", header=None, dtype={0: str, 1: str}, skip_blank_lines=False)
    except pd.errors.ParserError as error:
        raise DataError(f"{path}: {error}; expected 4 tab-separated fields per line") from None
    if table.shape[1] != 4:
        raise DataError(
            f"{path}, line 1: expected 4 tab-separated fields (user, item, rating, timestamp), "
            f"found {table.shape[1]}; u.data is tab-separated"
        )
    table.columns = names
    blank = table.isna().all(axis=1).to_numpy()
    lines = np.arange(1, len(table) + 1)[~blank]
    table = table[~blank]

    def where(row: int, name: str) -> str:
        return f"{path}, line {lines[row]}, field {name!r}"

    interactions = pd.DataFrame(
        {
            "user": id_column(table["user"], where, "user"),
            "item": id_column(table["item"], where, "item"),
            "rating": _number_column(table["rating"], where, "rating", "a number (the rating)"),
            "timestamp": _timestamp_column(table["timestamp"], where, "timestamp"),
        }
    )
    item_text = _read_movielens_items(folder) if (folder / "u.item").is_file() else None
    return RawData(interactions, str(folder), item_text=item_text, name=folder.name)


def _read_movielens_items(folder: Path) -> dict:
    genres = list(MOVIELENS_GENRES)
    if (folder / "u.genre").is_file():
        genre_lines = [line for line in decode_text(folder / "u.genre").splitlines() if line.strip()]
        genres = [line.split("|")[0] for line in genre_lines]
    path = folder / "u.item"
    data = path.read_bytes()
    # The format defines latin-1; a copy someone re-saved as UTF-8 decodes cleanly as UTF-8,
    # which a genuine latin-1 file with accented titles (bytes >= 0x80 alone) never does.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    expected = 5 + len(genres)
    item_text = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != expected:
            raise DataError(
                f"{path}, line {number}: expected {expected} '|'-separated fields (id|title|release date|"
                f"video release|url|{len(genres)} genre flags), found {len(fields)}"
            )
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataError(f"{path}, line {number}: genre flags must be 0 or 1, found {'|'.join(flags)!r}")
        item_id = fields[0].strip()
        if not item_id:
            raise DataError(f"{path}, line {number}: the item id (first field) is empty")
        chosen = [genre for genre, flag in zip(genres, flags, strict=True) if flag == "1"]
        item_text[item_id] = {"title": fields[1].strip(), "genres": ", ".join(chosen)}
    return item_text


def read_split_file(path: Path, *, integer_ids: bool = True) -> SplitFile:
    """Reads LightGCN line format: each line `user item item ...`, whitespace-separated.

    With `integer_ids` (the LightGCN format) every token must be a non-negative integer; the
    parse is vectorised over the whole file. Without it, tokens are kept as strings.
    A line holding only a user is allowed (a user with no items in this file).
    """
    require_file(path, "split file", "check data.path and the data.split.* file keys")
    data = path.read_bytes()
    if not data.strip():
        return SplitFile(path, *(np.zeros(0, dtype=np.int64) for _ in range(5)))
    if integer_ids:
        tokens, token_lines = _integer_tokens(path, data)
    else:
        tokens, token_lines = _text_tokens(path, data)
    first = np.ones(len(tokens), dtype=bool)
    first[1:] = token_lines[1:] != token_lines[:-1]
    line_of_pair = np.cumsum(first) - 1
    listed_users = tokens[first]
    return SplitFile(
        path,
        users=listed_users[line_of_pair[~first]],
        items=tokens[~first],
        lines=token_lines[~first],
        listed_users=listed_users,
        listed_lines=token_lines[first],
    )


def _integer_tokens(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """`[t]` int64 token values and `[t]` 1-based line numbers, parsed digit-wise in numpy."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    is_digit = (buffer >= ord("0")) & (buffer <= ord("9"))
    is_space = (buffer == ord(" ")) | (buffer == ord("\t")) | (buffer == ord("\n")) | (buffer == ord("\r"))
    newlines = np.flatnonzero(buffer == ord("\n"))
    bad = ~(is_digit | is_space)
    if bad.any():
        position = int(np.argmax(bad))
        line = int(np.searchsorted(newlines, position)) + 1
        line_start = newlines[line - 2] + 1 if line > 1 else 0
        line_end = newlines[line - 1] if line <= len(newlines) else len(data)
        text = data[line_start:line_end].decode("utf-8", "replace")
        token = next((part for part in text.split() if not part.isdigit()), text)
        raise DataError(
            f"{path}, line {line}: token {token!r} is not a non-negative integer id; each line must read "
            f"`user item item ...` with integer ids separated by spaces (line: {text[:80]!r})"
        )
    previous = np.concatenate([[False], is_digit[:-1]])
    following = np.concatenate([is_digit[1:], [False]])
    starts = np.flatnonzero(is_digit & ~previous)
    ends = np.flatnonzero(is_digit & ~following)
    lengths = ends - starts + 1
    if lengths.max() > 18:
        token = int(np.argmax(lengths))
        line = int(np.searchsorted(newlines, starts[token])) + 1
        raise DataError(f"{path}, line {line}: an id with {lengths[token]} digits is too long for an integer id")
    digit_positions = np.flatnonzero(is_digit)
    token_of_digit = np.repeat(np.arange(len(starts)), lengths)
    powers = np.power(np.int64(10), (ends[token_of_digit] - digit_positions).astype(np.int64))
    digits = (buffer[digit_positions] - ord("0")).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    values = np.add.reduceat(digits * powers, offsets)
    token_lines = np.searchsorted(newlines, starts).astype(np.int64) + 1
    return values, token_lines


def _text_tokens(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    del data  # decoded again so that a bad byte is reported with its line
    text = decode_text(path)
    tokens, token_lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        parts = line.split()
        tokens.extend(parts)
        token_lines.extend([number] * len(parts))
    return np.asarray(tokens, dtype=object), np.asarray(token_lines, dtype=np.int64)


def read_id_list(path: Path, *, integer_ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Reads ids listed one per line (or whitespace-separated): `([n] ids, [n] 1-based line numbers)`."""
    require_file(path, "id list", "check data.split.cold_items_file")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty; expected one id per line")
    return _integer_tokens(path, data) if integer_ids else _text_tokens(path, data)


def unify_ids(columns: list[np.ndarray]) -> list[np.ndarray]:
    """Gives ids of one kind (user or item), gathered from several sources, one type.

    All become int64 when every id is an integer or is written as a canonical decimal integer
    ("42", not "042" or "42.0"); otherwise all become strings exactly as written. So "007"
    stays "007", and a MovieLens item 5 read from u.data matches "5" read from u.item.
    """
    columns = [np.asarray(column) for column in columns]
    textual = [column for column in columns if column.dtype.kind not in "iu"]
    all_integers = all(
        pd.Series(column, dtype=object).astype(str).str.fullmatch(_CANONICAL_INTEGER).all() for column in textual
    )
    if all_integers:
        return [column.astype(np.int64) for column in columns]
    return [column.astype(str).astype(object) for column in columns]
