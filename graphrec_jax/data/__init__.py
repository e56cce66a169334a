"""Data in: readers for file formats, validation, id maps, splits and the synthetic catalogue.

`prepare_dataset(config.data)` turns a data config into a validated `Dataset`; nothing
downstream reads files or raw ids except through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from graphrec_jax.data.errors import DataError, DataWarning
from graphrec_jax.data.prepare import load_dataset, prepare_dataset
from graphrec_jax.data.synthetic import generate_catalogue
from graphrec_jax.data.types import (
    Dataset,
    EvalSplit,
    IdMap,
    Interactions,
    SocialLinks,
    UnknownIdError,
    load_id_maps,
)


def datasets_root() -> Path:
    """The folder of real datasets: `$GRAPHREC_DATASETS`, else `../shared/datasets` beside the repository.

    The folder may not exist; callers check and skip.
    """
    override = os.environ.get("GRAPHREC_DATASETS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


__all__ = [
    "DataError",
    "DataWarning",
    "Dataset",
    "EvalSplit",
    "IdMap",
    "Interactions",
    "SocialLinks",
    "UnknownIdError",
    "datasets_root",
    "generate_catalogue",
    "load_dataset",
    "load_id_maps",
    "prepare_dataset",
]
