"""Tests of graphrec_jax/text/pretraining.py and scripts/pretrain_text.py: masking, loss, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from graphrec_jax.text.bert import BertConfig
from graphrec_jax.text.encoder import TextEncoder
from graphrec_jax.text.pretrained import (
    create_random_checkpoint,
    load_pretrained,
    mlm_head_params_from_state_dict,
    read_checkpoint,
)
from graphrec_jax.text.pretraining import mask_tokens, mlm_loss, pretrain_mlm

REPOSITORY = Path(__file__).resolve().parents[1]
CORPUS = [
    "red pen with blue ink",
    "black stapler with staples",
    "yellow sticky notes pad",
    "blue ink cartridge for the printer",
    "red paper clips in a box",
    "white printer paper ream",
    "black office chair with wheels",
    "desk lamp with a white shade",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    words = sorted({word for text in CORPUS for word in text.split()})
    config = BertConfig(  # one layer: the train step compiles in a few seconds
        vocab_size=5 + len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return create_random_checkpoint(tmp_path_factory.mktemp("pretraining") / "bert", words, config)


def test_masking_follows_the_80_10_10_rule():
    rng = np.random.default_rng(0)
    batch_size, length, vocab_size, mask_id = 512, 40, 1000, 4
    input_ids = rng.integers(10, vocab_size, (batch_size, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, batch_size)
    real = np.arange(length)[None, :] < lengths[:, None]
    candidates = real.copy()
    candidates[:, 0] = False  # [CLS]
    candidates[np.arange(batch_size), lengths - 1] = False  # [SEP]
    batch = mask_tokens(
        rng,
        input_ids,
        candidates,
        num_predictions=6,
        mask_probability=0.15,
        mask_token_id=mask_id,
        vocab_size=vocab_size,
    )
    used = batch["label_weights"] > 0
    rows = np.broadcast_to(np.arange(batch_size)[:, None], used.shape)
    positions = batch["masked_positions"]
    assert candidates[rows[used], positions[used]].all()  # never [CLS], [SEP] or padding
    np.testing.assert_array_equal(batch["labels"][used], input_ids[rows[used], positions[used]])
    expected = np.minimum(np.maximum(1, np.rint(candidates.sum(1) * 0.15)), 6)
    np.testing.assert_array_equal(used.sum(axis=1), expected)
    for row in range(8):  # a position is predicted at most once per row
        assert len(set(positions[row][used[row]])) == used[row].sum()
    changed = batch["input_ids"] != input_ids
    assert changed.sum() <= used.sum() and (changed & ~candidates).sum() == 0
    new = batch["input_ids"][rows[used], positions[used]]
    share_masked = np.mean(new == mask_id)
    share_kept = np.mean(new == batch["labels"][used])
    assert abs(share_masked - 0.8) < 0.04 and abs(share_kept - 0.1) < 0.03
    assert abs(1 - share_masked - share_kept - 0.1) < 0.03  # random replacements


def test_mlm_loss_is_mean_cross_entropy_over_used_slots():
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    labels = jnp.array([[0, 1]])
    np.testing.assert_allclose(
        mlm_loss(logits=logits, labels=labels, weights=jnp.array([[1.0, 1.0]])),
        -(np.log(0.5) + np.log(0.8)) / 2,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        mlm_loss(logits=logits, labels=labels, weights=jnp.array([[0.0, 1.0]])), -np.log(0.8), rtol=1e-6
    )
    assert float(mlm_loss(logits=logits, labels=labels, weights=jnp.zeros((1, 2)))) == 0.0


def test_pretraining_lowers_the_loss_and_saves_a_loadable_tower(tiny_dir, tmp_path):
    output = tmp_path / "adapted"
    result = pretrain_mlm(
        tiny_dir,
        CORPUS * 4,
        output,
        num_steps=30,
        batch_size=16,
        learning_rate=3e-3,
        max_length=16,
        log_every=10,
    )
    losses = result["losses"]
    assert len(losses) == 30 and result["first_loss"] == losses[0] and result["last_loss"] == losses[-1]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    records = [json.loads(line) for line in (output / "pretrain_metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 10, 20, 30]
    np.testing.assert_allclose(records[-1]["loss"], np.mean(losses[-10:]), rtol=1e-6)

    adapted = TextEncoder.from_pretrained(output, max_length=16)
    vectors = adapted.encode(CORPUS, pooling="pooler")
    assert vectors.shape == (len(CORPUS), 32) and np.isfinite(vectors).all()
    _, original = load_pretrained(tiny_dir)
    assert (
        np.abs(
            adapted.params["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]
            - original["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]
        ).max()
        > 1e-4
    )
    np.testing.assert_array_equal(  # the pooler is not trained by MLM: it is kept as loaded
        adapted.params["pooler"]["dense"]["kernel"], original["pooler"]["dense"]["kernel"]
    )
    config, state = read_checkpoint(output)
    head = mlm_head_params_from_state_dict(state, config)
    assert head is not None and np.abs(head["predictions"]["bias"]).max() > 0  # the trained head is saved


def test_pretraining_rejects_bad_inputs(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="non-empty text"):
        pretrain_mlm(tiny_dir, ["", None], tmp_path / "out", num_steps=1)
    with pytest.raises(ValueError, match="max_length=100"):
        pretrain_mlm(tiny_dir, CORPUS, tmp_path / "out", num_steps=1, max_length=100)
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        (tmp_path / "empty").mkdir()
        pretrain_mlm(tmp_path / "empty", CORPUS, tmp_path / "out", num_steps=1)


@pytest.mark.slow
def test_script_pretrains_from_a_texts_file(tiny_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(CORPUS) + "\n")
    command = [
        sys.executable,
        str(REPOSITORY / "scripts" / "pretrain_text.py"),
        f"--encoder={tiny_dir}",
        f"--texts-file={texts}",
        f"--output={tmp_path / 'out'}",
        "--steps=3",
        "--batch-size=4",
        "--max-length=16",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert json.loads(completed.stdout)["num_steps"] == 3
