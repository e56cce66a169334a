"""The Amazon review JSON folder format (LC-Rec / LETTER convention).

A folder holds `NAME.inter.json` (`{"user": [item, ...]}`, each list one user's
interactions in chronological order) and `NAME.item.json` (`{"item": {"title",
"description", "brand", "categories"}}`). Flattened, each (user, item) pair is one
interaction and rows keep the sequence order, which leave-one-out uses in place of
timestamps.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.readers import RawData, decode_text, require_file

ITEM_TEXT_FIELDS = ("title", "description", "brand", "categories")


def find_amazon_name(folder: Path, name: str = "") -> str:
    """`name` if given, else the stem of the single `*.inter.json` in `folder`."""
    if name:
        return name
    if not folder.is_dir():
        raise DataError(f"Amazon folder {folder} does not exist; set data.path to the folder holding NAME.inter.json")
    found = sorted(path.name for path in folder.glob("*.inter.json"))
    if len(found) != 1:
        listing = ", ".join(found) if found else "none"
        raise DataError(
            f"{folder} must hold exactly one *.inter.json to infer the dataset name, found {listing}; "
            "set data.name (for example data.name=Office for Office.inter.json)"
        )
    return found[0][: -len(".inter.json")]


def load_json(path: Path):
    """Parses a JSON file; truncated or invalid JSON names the line and column of the failure."""
    text = decode_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; expected one JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}, line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}); "
            "the file is truncated or was not written as JSON"
        ) from None


def read_amazon(folder: Path, name: str = "") -> RawData:
    """Reads `NAME.inter.json` and `NAME.item.json` from `folder`. Not jittable (host I/O).

    Ids are strings as written (JSON keys; item ids inside sequences are turned into their
    text so that they match the keys of item.json). Item text: HTML entities unescaped,
    one entry per item in item.json, items with no interaction included.
    """
    name = find_amazon_name(folder, name)
    inter_path = require_file(folder / f"{name}.inter.json", "Amazon interaction file", "set data.path and data.name")
    item_path = require_file(folder / f"{name}.item.json", "Amazon item file", "set data.path and data.name")
    sequences = load_json(inter_path)
    if not isinstance(sequences, dict) or not sequences:
        raise DataError(f"{inter_path}: expected a non-empty JSON object {{user: [item, ...]}}")
    users, items = [], []
    for user, sequence in sequences.items():
        if not isinstance(sequence, list):
            raise DataError(
                f"{inter_path}, user {user!r}: expected a list of item ids, found {type(sequence).__name__}"
            )
        for item in sequence:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise DataError(f"{inter_path}, user {user!r}: item id {item!r} is not an integer or a string")
        users.extend([user] * len(sequence))
        items.extend(str(item) for item in sequence)
    if not items:
        raise DataError(f"{inter_path}: every user sequence is empty; expected interactions")
    item_text = _read_item_text(item_path)
    unknown = sorted(set(items) - set(item_text))
    if unknown:
        warn(
            f"{len(unknown)} items in {inter_path.name} have no entry in {item_path.name} "
            f"(for example {', '.join(unknown[:3])}); they get empty text"
        )
    interactions = pd.DataFrame({"user": np.asarray(users, dtype=object), "item": np.asarray(items, dtype=object)})
    return RawData(interactions, str(folder), item_text=item_text, name=name)


def _read_item_text(path: Path) -> dict:
    payload = load_json(path)
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object {{item: {{title, description, brand, categories}}}}")
    item_text = {}
    for item, fields in payload.items():
        if not isinstance(fields, dict):
            raise DataError(f"{path}, item {item!r}: expected an object of text fields, found {type(fields).__name__}")
        item_text[str(item)] = {field: _clean(fields.get(field)) for field in ITEM_TEXT_FIELDS}
    return item_text


def _clean(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # some releases store the category path as a list
        value = ", ".join(_clean(part) for part in value)
    text = str(value)
    for _ in range(2):  # some descriptions are escaped twice ("&amp;amp;")
        text = html.unescape(text)
    return text.replace("\xa0", " ").strip()
