"""On-disk cache of frozen text embeddings, keyed by everything that changes them.

The key covers the encoder's fingerprint (config and weights), its tokenizer (vocabulary,
normalisation, special tokens), max_length, compute dtype, pooling, normalisation and the
texts themselves; a hit loads an `.npy` file without running the model. Files are written
to a temporary name and renamed, so a crash or a concurrent writer never leaves a partial
file behind; an entry that cannot be read back (empty, cut short, not an array of the
expected shape) counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphrec_jax.text.encoder import TextEncoder, as_text

CACHE_ENV = "GRAPHREC_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$GRAPHREC_CACHE_DIR/text` when the variable is set, else `~/.cache/graphrec_jax/text`."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() / "text" if root else Path.home() / ".cache" / "graphrec_jax" / "text"


def texts_digest(texts: Sequence[str | None]) -> str:
    """sha256 over the texts in order (None, NaN and "" hash alike, as they encode alike)."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = as_text(text).encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))  # length-prefixed: ["ab"] != ["a", "b"]
        digest.update(encoded)
    return digest.hexdigest()


def cache_key(encoder: TextEncoder, texts: Sequence[str | None], *, pooling: str, normalize: bool) -> str:
    """The file stem for these inputs: sha256 of model identity, settings and texts."""
    identity = {
        "model": encoder.fingerprint(),
        "tokenizer": encoder.tokenizer_fingerprint(),
        "max_length": encoder.max_length,
        "dtype": encoder.dtype_name,
        "pooling": pooling,
        "normalize": bool(normalize),
        "texts": texts_digest(texts),
        "count": len(texts),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _read_entry(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The `[n, hidden]` float32 vectors stored at `path`, or None when there are none to trust.

    A missing, empty, truncated or foreign file is a miss, as is an array of another shape
    or dtype than the encoder writes.
    """
    try:
        vectors = np.load(path, allow_pickle=False)
    except Exception:  # EOFError, ValueError, OSError, BadZipFile, ...: recompute and overwrite it
        return None
    if not isinstance(vectors, np.ndarray):  # a zip archive (.npz) holds no single array
        vectors.close()
        return None
    if vectors.shape != shape or vectors.dtype != np.float32:
        return None
    return vectors


def encode_with_cache(
    encoder: TextEncoder,
    texts: Sequence[str | None],
    *,
    pooling: str,
    normalize: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """`encoder.encode(texts, pooling, normalize)` through the on-disk cache.

    Args:
      encoder: the text tower (its params or tokenizer may have been replaced; the key follows them).
      texts: `[n]` strings.
      pooling: "pooler" | "cls" | "mean".
      cache_dir: where `.npy` files live; None or "": `default_cache_dir()`.

    Returns:
      `[n, hidden]` float32. Not jittable (file I/O, host encoding).
    """
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = directory / f"{cache_key(encoder, texts, pooling=pooling, normalize=normalize)}.npy"
    vectors = _read_entry(path, (len(texts), encoder.hidden_size))
    if vectors is not None:
        return vectors
    vectors = encoder.encode(texts, pooling=pooling, normalize=normalize, progress=progress)
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".writing-", suffix=".npy")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, vectors)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return vectors
