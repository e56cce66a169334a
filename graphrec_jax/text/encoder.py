"""`TextEncoder`: a pretrained BERT with its tokenizer, turning texts into vectors.

`encode` is the host-side frozen path: tokenize, sort texts by length, cut static-shape
batches padded to a multiple of `LENGTH_BUCKET` tokens, run one compiled function per
bucket length and restore the input order. `tokenize` and `embed` are the pure pieces a
trainer calls inside its own jitted step to fine-tune the tower.

On CPU, `encode` keeps `workers` batches in flight, one per host thread, each thread taking
the next batch when its own is done (longest batches first). XLA splits every op of a batch
evenly over its intra-op threads, so when another process holds one core the whole batch
waits for the thread that shares it; independent batches let the free core run ahead. The
CPU programs are compiled with XLA's Eigen matmuls instead of its YNNPACK fusions, which
are slower for BERT's shapes here (docs/BENCHMARKS.md, "Text tower").
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from graphrec_jax.text.bert import POOLINGS, BertConfig, BertModel, compute_dtype, pool
from graphrec_jax.text.pretrained import load_pretrained, resolve_model_directory, transformers_tokenizers

# Sequence lengths are rounded up to a multiple of this: at most max_length / 16 compiled
# shapes, while short texts do not pay for max_length tokens.
LENGTH_BUCKET = 16
# encode() shows a progress bar from this many batches on when progress=None.
_PROGRESS_MIN_BATCHES = 8


def embed(
    params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    *,
    module: BertModel,
    pooling: str,
    deterministic: bool = True,
    rngs: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """Pure, jittable: `[b, t]` int32 ids and mask -> `[b, hidden]` float32 text vectors.

    `deterministic=False` turns dropout on and needs `rngs={"dropout": key}`.
    """
    output = module.apply({"params": params}, input_ids, attention_mask, deterministic=deterministic, rngs=rngs)
    return pool(output.last_hidden_state, attention_mask, output.pooler_output, pooling)


def as_text(value: Any) -> str:
    """A text as encoded: None and NaN (missing values from pandas) become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# XLA CPU compile options for the frozen pass: Eigen's dot emitter rather than YNNPACK fusions
# (about 1.2x faster for BERT's [tokens, 384] x [384, 1536] products on AVX-512 Xeons).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# Batches kept in flight by encode() on CPU when workers=0.
_CPU_WORKERS = 2


# Tokenizer state that says where files came from or is set per call, not how texts become ids.
_TOKENIZER_STATE_IGNORED = ("truncation", "padding", "name_or_path", "vocab_file", "tokenizer_file", "is_local")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over what turns texts into token ids: vocabulary, normalisation, special tokens.

    A fast (Rust) tokenizer is hashed through its serialized pipeline (`tokenizer.json`),
    any other through its vocabulary and settings; the tokenizer in memory is what encodes,
    so it is hashed rather than the files it was read from. Not jittable (host objects).
    """

    def plain(state: dict) -> str:
        kept = {key: value for key, value in state.items() if key not in _TOKENIZER_STATE_IGNORED}
        return json.dumps(kept, sort_keys=True, default=str)

    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(plain(json.loads(backend.to_str())).encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
        digest.update(plain(dict(getattr(tokenizer, "init_kwargs", {}))).encode())
    return digest.hexdigest()


def _jit_embed(compiler_options: dict[str, Any] | None = None):
    return jax.jit(embed, static_argnames=("module", "pooling", "deterministic"), compiler_options=compiler_options)


# One compilation per (module, pooling, input shape), shared by every encoder: modules
# compare by value, so two encoders of the same architecture reuse each other's programs.
_compiled_embed = _jit_embed()


@functools.cache
def _cpu_compiled_embed():
    """`_compiled_embed` with `CPU_COMPILER_OPTIONS`, or the plain one where this XLA lacks them."""
    try:  # an XLA without the option rejects it when compiling
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(jnp.zeros(1, jnp.float32))
    except Exception as error:
        warnings.warn(
            f"XLA CPU option {CPU_COMPILER_OPTIONS} unavailable ({error}); encoding with defaults", stacklevel=3
        )
        return _compiled_embed
    return _jit_embed(CPU_COMPILER_OPTIONS)


def _embed_function(device: jax.Device):
    return _cpu_compiled_embed() if device.platform == "cpu" else _compiled_embed


def plan_batches(lengths: Sequence[int], batch_size: int, max_length: int) -> list[tuple[np.ndarray, int]]:
    """Groups texts of similar token counts into batches.

    Args:
      lengths: `[n]` token counts ([CLS] and [SEP] included, at most `max_length`).

    Returns:
      `(rows, padded_length)` per batch: the rows (indices into `lengths`, at most
      `batch_size` of them) sorted by length, and their length rounded up to a multiple of
      `LENGTH_BUCKET`, capped at `max_length`.
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = int(max(lengths[row] for row in rows))
        batches.append((rows, min(-(-longest // LENGTH_BUCKET) * LENGTH_BUCKET, max_length)))
    return batches


class TextEncoder:
    """A BERT tower, its parameters and tokenizer.

    Attributes:
      config: the `BertConfig`.
      params: float32 parameter tree (replace it after fine-tuning; the cache fingerprint follows).
      tokenizer: the Hugging Face tokenizer read from the checkpoint directory.
      module: `BertModel(config, dtype)`.
      max_length: tokens per text, [CLS] and [SEP] included; longer texts are truncated.
      dtype_name: "float32" | "bfloat16" | "float16", the compute dtype.
      batch_size: texts per compiled call in `encode`.
      workers: batches `encode` keeps in flight, each on its own host thread; 0 picks 2 on
        CPU (see the module docstring) and 1 on accelerators, whose asynchronous dispatch
        already overlaps the host.
      num_model_calls: batches run by `encode` so far (the embedding cache's tests read it).
    """

    def __init__(
        self,
        config: BertConfig,
        params: Any,
        tokenizer: Any,
        *,
        max_length: int = 128,
        dtype: str = "float32",
        batch_size: int = 64,
        workers: int = 0,
        source: str = "",
    ):
        if not 2 <= max_length <= config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length} must lie in [2, {config.max_position_embeddings}] "
                f"(max_position_embeddings of {source or 'the checkpoint'})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be positive")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers={workers} must be 0 (automatic) or a positive number of threads")
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dtype_name = dtype
        self.batch_size = batch_size
        self.workers = workers
        self.source = source
        self.module = BertModel(config, dtype=compute_dtype(dtype))
        self.num_model_calls = 0
        self._fingerprint: tuple[Any, str] | None = None

    @classmethod
    def from_pretrained(
        cls,
        dir_or_name: str | Path,
        max_length: int = 128,
        dtype: str = "float32",
        batch_size: int = 64,
        workers: int = 0,
    ) -> TextEncoder:
        """Loads config, weights and tokenizer from a HF checkpoint directory (or hub name)."""
        AutoTokenizer = transformers_tokenizers().AutoTokenizer

        directory = resolve_model_directory(dir_or_name)
        config, params = load_pretrained(directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as error:
            raise FileNotFoundError(
                f"could not read a tokenizer from {directory} ({error}); the directory needs "
                "tokenizer.json or vocab.txt with tokenizer_config.json"
            ) from error
        return cls(
            config,
            params,
            tokenizer,
            max_length=max_length,
            dtype=dtype,
            batch_size=batch_size,
            workers=workers,
            source=str(directory),
        )

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def fingerprint(self) -> str:
        """sha256 over config and parameter bytes; memoised for the current `params` object."""
        if self._fingerprint is None or self._fingerprint[0] is not self.params:
            digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
            for path, leaf in jax.tree_util.tree_flatten_with_path(self.params)[0]:
                digest.update(jax.tree_util.keystr(path).encode())
                digest.update(np.ascontiguousarray(np.asarray(leaf, dtype=np.float32)).tobytes())
            self._fingerprint = (self.params, digest.hexdigest())
        return self._fingerprint[1]

    def tokenizer_fingerprint(self) -> str:
        """`tokenizer_fingerprint(self.tokenizer)`: the embedding cache key covers the vocabulary too."""
        return tokenizer_fingerprint(self.tokenizer)

    def _token_lists(self, texts: Sequence[str | None]) -> list[list[int]]:
        cleaned = [as_text(text) for text in texts]
        encoded = self.tokenizer(cleaned, truncation=True, max_length=self.max_length, padding=False)
        return encoded["input_ids"]

    def tokenize(self, texts: Sequence[str | None]) -> dict[str, np.ndarray]:
        """Texts -> `{"input_ids", "attention_mask"}`, each `[n, max_length]` int32, right-padded.

        None, NaN and "" become [CLS] [SEP]. Not jittable (host tokenizer).
        """
        return pad_token_lists(self._token_lists(texts), len(texts), self.max_length, self.config.pad_token_id)

    def encode(
        self,
        texts: Sequence[str | None],
        pooling: str = "pooler",
        normalize: bool = False,
        progress: bool | None = None,
    ) -> np.ndarray:
        """Frozen encoding of `texts` -> `[n, hidden]` float32 in input order.

        Args:
          texts: strings; None and "" are fine.
          pooling: "pooler" | "cls" | "mean".
          normalize: scale each row to unit L2 norm.
          progress: show a tqdm bar; None shows one from 8 batches on.
        Not jittable (tokenizer, host batching); each batch runs a compiled function.
        """
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
        count = len(texts)
        if count == 0:
            return np.zeros((0, self.hidden_size), np.float32)
        token_lists = self._token_lists(texts)
        batches = plan_batches([len(tokens) for tokens in token_lists], self.batch_size, self.max_length)
        show = len(batches) >= _PROGRESS_MIN_BATCHES if progress is None else progress
        device = jax.devices()[0]
        run = _embed_function(device)
        workers = self.workers or (min(_CPU_WORKERS, os.cpu_count() or 1) if device.platform == "cpu" else 1)
        vectors = np.zeros((count, self.hidden_size), np.float32)

        def encode_batch(rows: np.ndarray, length: int) -> tuple[np.ndarray, jax.Array]:
            batch = pad_token_lists(
                [token_lists[row] for row in rows], self.batch_size, length, self.config.pad_token_id
            )
            output = run(
                self.params,
                jnp.asarray(batch["input_ids"]),
                jnp.asarray(batch["attention_mask"]),
                module=self.module,
                pooling=pooling,
            )
            return rows, output.block_until_ready() if workers > 1 else output

        with tqdm(total=count, desc="encoding text", unit="text", disable=not show) as bar:
            if workers == 1:  # dispatch is asynchronous: the next batch is padded while this one runs
                outputs = [encode_batch(rows, length) for rows, length in batches]
            else:
                with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="encode") as executor:
                    # Longest first, so the last batches in flight are the shortest.
                    futures = [executor.submit(encode_batch, rows, length) for rows, length in reversed(batches)]
                    outputs = []
                    for future in concurrent.futures.as_completed(futures):
                        outputs.append(future.result())
                        bar.update(len(outputs[-1][0]))
            for rows, output in outputs:
                vectors[rows] = np.asarray(output)[: len(rows)]
                if workers == 1:
                    bar.update(len(rows))
            self.num_model_calls += len(batches)
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def pad_token_lists(
    token_lists: Sequence[Sequence[int]], num_rows: int, length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Right-pads token lists into `input_ids` and `attention_mask`, `[num_rows, length]` int32.

    Rows past the lists are all padding (attention mask 0).
    """
    input_ids = np.full((num_rows, length), pad_id, np.int32)
    attention_mask = np.zeros((num_rows, length), np.int32)
    for row, tokens in enumerate(token_lists):
        input_ids[row, : len(tokens)] = tokens
        attention_mask[row, : len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
