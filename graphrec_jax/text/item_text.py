"""Item text assembly: joining a record's text fields into one clean string per item.

Also a minimal reader of the Amazon `NAME.item.json` files (LC-Rec layout,
`{"<item_id>": {"title": ..., "brand": ..., ...}}`) for the text pretraining script; the
full data loaders live in `graphrec_jax.data`.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphrec_jax.data.errors import DataError

_WHITESPACE = re.compile(r"\s+")


def _clean(value: Any) -> str:
    """One field value -> unescaped, whitespace-collapsed text; "" for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(part for part in (_clean(item) for item in value) if part)
    text = str(value)
    for _ in range(3):  # some scraped descriptions are escaped twice ("&amp;lt;")
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return _WHITESPACE.sub(" ", text).strip()


def join_text_fields(
    records: Sequence[Mapping[str, Any] | None], fields: Sequence[str], separator: str = " "
) -> list[str]:
    """Joins `fields` of each record into one string, in `fields` order.

    HTML entities are unescaped (`&amp;` -> `&`, twice-escaped `&amp;lt;` -> `<`), whitespace is collapsed, and missing,
    None, NaN or empty fields are skipped; list values are joined with ", ". A record that
    is None or has none of the fields gives "". Never raises on odd values.

    Returns:
      `[len(records)]` strings.
    """
    texts = []
    for record in records:
        if not isinstance(record, Mapping):
            texts.append("")
            continue
        parts = (_clean(record.get(field)) for field in fields)
        texts.append(separator.join(part for part in parts if part))
    return texts


def parse_fields(text: str) -> list[str]:
    """ "title, brand,categories" -> ["title", "brand", "categories"]."""
    return [field.strip() for field in text.split(",") if field.strip()]


def read_amazon_item_records(data_path: str | Path, name: str = "") -> tuple[list[str], list[dict]]:
    """Reads `data_path/NAME.item.json` -> (raw item ids in file order, records).

    `name` is the file stem (Office for Office.item.json); empty: the only `*.item.json`
    in the folder. Not jittable (file I/O).
    """
    folder = Path(data_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data path {folder} is not a directory")
    if name:
        path = folder / f"{name}.item.json"
    else:
        candidates = sorted(folder.glob("*.item.json"))
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"expected exactly one *.item.json in {folder}, found {[c.name for c in candidates]}; "
                "pass the dataset name (the file stem, e.g. Office)"
            )
        path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with open(path) as file:
            items = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a JSON file ({error}); expected {{item_id: {{field: text}}}}") from None
    if not isinstance(items, dict):
        raise DataError(f"{path}: expected a JSON object {{item_id: {{field: text}}}}")
    return list(items), [value if isinstance(value, dict) else None for value in items.values()]


def amazon_item_texts(data_path: str | Path, fields: Sequence[str], name: str = "") -> list[str]:
    """One joined text per item of `data_path/NAME.item.json`, in file order."""
    _, records = read_amazon_item_records(data_path, name)
    return join_text_fields(records, fields)


def read_texts_file(path: str | Path) -> list[str]:
    """One text per line of a UTF-8 file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file {path} does not exist (expected one text per line)")
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]
