"""Tests of graphrec_jax/text/item_text.py: joining fields and reading Amazon item files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from graphrec_jax.text.item_text import (
    amazon_item_texts,
    join_text_fields,
    parse_fields,
    read_amazon_item_records,
    read_texts_file,
)

DATASETS = Path(os.environ.get("GRAPHREC_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def test_fields_are_joined_in_order_and_cleaned():
    records = [
        {"title": "AT&amp;T  Phone\n", "brand": "AT&amp;T", "categories": "Office, Phones"},
        {"title": "Pen", "brand": None, "description": float("nan"), "categories": ""},
        {"title": "Desk", "categories": ["Furniture", "Desks &amp; Tables", None, ""]},
        {"other": "x"},
        None,
        {"title": 42, "brand": "  "},
        {"description": "a &amp;lt;b&amp;gt; tag"},
    ]
    texts = join_text_fields(records, ["title", "brand", "categories", "description"])
    assert texts == [
        "AT&T Phone AT&T Office, Phones",
        "Pen",
        "Desk Furniture, Desks & Tables",
        "",
        "",
        "42",
        "a <b> tag",
    ]
    assert join_text_fields(records[:1], ["brand", "title"], separator=" | ") == ["AT&T | AT&T Phone"]
    assert join_text_fields([], ["title"]) == []


def test_parse_fields():
    assert parse_fields(" title, brand,,categories ") == ["title", "brand", "categories"]


def test_amazon_reader_and_texts_file(tmp_path):
    items = {"0": {"title": "Stapler", "brand": "Swingline"}, "1": {"title": "Ink &amp; toner"}, "2": None}
    (tmp_path / "Shop.item.json").write_text(json.dumps(items))
    ids, records = read_amazon_item_records(tmp_path)
    assert ids == ["0", "1", "2"] and records[2] is None
    assert amazon_item_texts(tmp_path, ["title", "brand"], name="Shop") == ["Stapler Swingline", "Ink & toner", ""]
    with pytest.raises(FileNotFoundError, match="Other.item.json"):
        read_amazon_item_records(tmp_path, "Other")
    (tmp_path / "Two.item.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        read_amazon_item_records(tmp_path)
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\n  second text  \n")
    assert read_texts_file(lines) == ["first text", "second text"]
    with pytest.raises(FileNotFoundError, match="one text per line"):
        read_texts_file(tmp_path / "absent.txt")


@pytest.mark.data
def test_office_item_texts():
    folder = DATASETS / "amazon-office-text"
    if not (folder / "Office.item.json").is_file():
        pytest.skip(f"{folder}/Office.item.json is absent (set GRAPHREC_DATASETS)")
    texts = amazon_item_texts(folder, ["title", "brand", "categories", "description"])
    assert len(texts) == 2420
    assert all(texts) and not any("&amp;" in text or "  " in text for text in texts)
    words = np.array([len(text.split()) for text in texts])
    assert 100 < words.mean() < 160  # SOURCE.md: 128.5 words per item, all fields together
