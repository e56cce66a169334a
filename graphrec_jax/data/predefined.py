"""Predefined splits: train and test files in LightGCN line format, checked line by line.

A split folder holds `train.txt` plus `test.txt` (split "test"), `valid.txt` ("valid"),
or `test_warm.txt` / `test_cold.txt` ("warm" / "cold") with `cold_items.txt`. The
`data.split.train_file` / `test_files` / `cold_items_file` keys name files anywhere
under `data.path` instead. Every id must belong to the data, every held-out user must
have training interactions, a "cold" split holds only cold items and no other split or
training file holds any; violations name the file, line and id. Held-out items that
never occur in training (and are not cold) are kept with a counted `DataWarning`: random
80/20 splits such as ml-100k's leave a few items only in test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_jax.data.errors import DataError, warn
from graphrec_jax.data.readers import SplitFile, read_id_list, read_split_file
from graphrec_jax.data.splits import Splits, index_mask, merge_duplicates
from graphrec_jax.data.types import EvalSplit, Interactions

# File names recognised in a split folder, and the evaluation split each one becomes.
_FOLDER_SPLITS = {"valid.txt": "valid", "test.txt": "test", "test_warm.txt": "warm", "test_cold.txt": "cold"}


@dataclasses.dataclass
class SplitFiles:
    """The files of a predefined split, read but not yet mapped to indices.

    Attributes:
      train: the training file.
      evaluation: evaluation split name -> its file.
      cold_items: `[c]` raw ids of cold items, or None.
      cold_lines: `[c]` line numbers of `cold_items` in `cold_path`.
      cold_path: the cold item list, or None.
    """

    train: SplitFile
    evaluation: dict[str, SplitFile]
    cold_items: np.ndarray | None = None
    cold_lines: np.ndarray | None = None
    cold_path: Path | None = None


def locate_split_files(data_path: Path, split_config, file_format: str) -> tuple[Path, dict[str, Path], Path | None]:
    """Resolves (train file, {split name: file}, cold item list or None) from the `data.split` keys."""
    if split_config.train_file:
        if not split_config.test_files:
            raise DataError("data.split.train_file is set but data.split.test_files is empty; set 'test=test.txt'")
        tests = {}
        for entry in str(split_config.test_files).split(","):
            name, separator, relative = entry.strip().partition("=")
            if not separator:
                name, relative = "test", name
            if not name or not relative or name in tests:
                raise DataError(f"data.split.test_files={split_config.test_files!r} must read 'name=path,name=path'")
            tests[name] = data_path / relative.strip()
        cold = data_path / split_config.cold_items_file if split_config.cold_items_file else None
        return data_path / split_config.train_file, tests, cold
    if split_config.folder:
        folder = data_path / split_config.folder
    elif file_format == "lightgcn":
        folder = data_path
    else:
        raise DataError(
            f"data.split.method='predefined' needs split files for data.format={file_format!r}: set "
            "data.split.folder (a folder under data.path holding train.txt and test.txt, such as 'split' "
            "or 'split-cold'), or data.split.train_file and data.split.test_files"
        )
    if not folder.is_dir():
        raise DataError(f"split folder {folder} does not exist; check data.path and data.split.folder")
    tests = {name: folder / file for file, name in _FOLDER_SPLITS.items() if (folder / file).is_file()}
    if not (folder / "train.txt").is_file() or not tests:
        found = ", ".join(sorted(path.name for path in folder.iterdir())) or "nothing"
        raise DataError(
            f"split folder {folder} must hold train.txt and test.txt (or test_warm.txt and test_cold.txt); "
            f"found {found}"
        )
    cold = folder / "cold_items.txt" if (folder / "cold_items.txt").is_file() else None
    return folder / "train.txt", tests, cold


def read_split_files(data_path: Path, split_config, file_format: str, *, integer_ids: bool) -> SplitFiles:
    """Reads the files `locate_split_files` names. Not jittable (host I/O)."""
    train_path, test_paths, cold_path = locate_split_files(data_path, split_config, file_format)
    files = SplitFiles(
        train=read_split_file(train_path, integer_ids=integer_ids),
        evaluation={name: read_split_file(path, integer_ids=integer_ids) for name, path in test_paths.items()},
    )
    if len(files.train.items) == 0:
        raise DataError(f"{train_path} holds no interactions; expected lines `user item item ...`")
    if cold_path is not None:
        files.cold_items, files.cold_lines = read_id_list(cold_path, integer_ids=integer_ids)
        files.cold_path = cold_path
    if "cold" in files.evaluation and files.cold_items is None:
        raise DataError(
            f"split 'cold' ({files.evaluation['cold'].path}) needs the list of cold items: put "
            "cold_items.txt beside it or set data.split.cold_items_file"
        )
    return files


def _lookup(index: pd.Index, raw: np.ndarray, lines: np.ndarray, path: Path, kind: str, defined_by: str) -> np.ndarray:
    """`[n]` int32 indices of `raw` ids; an id missing from `index` raises naming its line."""
    codes = index.get_indexer(raw)
    if (codes < 0).any():
        row = int(np.argmax(codes < 0))
        raise DataError(
            f"{path}, line {lines[row]}: {kind} id {_plain(raw[row])!r} does not occur in the data "
            f"({defined_by}); the split files must use the data's own {kind} ids"
        )
    return codes.astype(np.int32)


def build_predefined_splits(
    files: SplitFiles, user_index: pd.Index, item_index: pd.Index, *, defined_by: str
) -> Splits:
    """Maps the split files to indices and checks them; returns (train, {name: EvalSplit})."""
    num_items = len(item_index)

    def to_interactions(split_file: SplitFile) -> tuple[Interactions, np.ndarray]:
        users = _lookup(user_index, split_file.users, split_file.lines, split_file.path, "user", defined_by)
        items = _lookup(item_index, split_file.items, split_file.lines, split_file.path, "item", defined_by)
        _lookup(user_index, split_file.listed_users, split_file.listed_lines, split_file.path, "user", defined_by)
        return Interactions(users, items), split_file.lines

    cold = None
    is_cold = np.zeros(num_items, dtype=bool)
    if files.cold_items is not None:
        cold = _lookup(item_index, files.cold_items, files.cold_lines, files.cold_path, "item", defined_by)
        is_cold = index_mask(cold, num_items)
        cold = np.flatnonzero(is_cold).astype(np.int32)
    train, train_lines = to_interactions(files.train)
    cold_name = files.cold_path.name if files.cold_path is not None else ""
    if cold is not None:
        reason = f"is listed in {cold_name}, so it is cold and must not occur in training"
        _reject(is_cold[train.items], files.train, train_lines, "item", reason)
    train, _ = merge_duplicates(train, num_items, source=str(files.train.path))
    warm_items = None if cold is None else np.flatnonzero(~is_cold).astype(np.int32)
    trained_users = index_mask(train.users, len(user_index))
    trained_items = index_mask(train.items, num_items)
    train_name = files.train.path.name
    train_keys = pd.Index(train.users.astype(np.int64) * num_items + train.items)
    evaluation = {}
    for name, split_file in files.evaluation.items():
        held_out, lines = to_interactions(split_file)
        reason = (
            f"has no interaction in {train_name}; every held-out user needs training interactions, "
            "so remove the line or add the user's interactions to the training file"
        )
        _reject(~trained_users[held_out.users], split_file, lines, "user", reason)
        if name == "cold":
            reason = f"is not listed in {cold_name}; the 'cold' split holds cold items only"
            _reject(~is_cold[held_out.items], split_file, lines, "item", reason)
            candidates = cold
        else:
            if cold is not None:
                reason = f"is a cold item ({cold_name}); cold items belong to the 'cold' split only"
                _reject(is_cold[held_out.items], split_file, lines, "item", reason)
            _warn_untrained_items(~trained_items[held_out.items], split_file, lines, train_name)
            candidates = warm_items
        held_out, _ = merge_duplicates(held_out, num_items, source=str(split_file.path))
        overlap = train_keys.get_indexer(held_out.users.astype(np.int64) * num_items + held_out.items) >= 0
        if overlap.any():
            warn(f"{int(overlap.sum())} (user, item) pairs of {split_file.path} also occur in {train_name}")
        evaluation[name] = EvalSplit(held_out, candidates)
    return train, evaluation


def _warn_untrained_items(untrained: np.ndarray, split_file: SplitFile, lines, train_name: str) -> None:
    """Items of the id space that only occur held out are kept (they count as misses) but announced."""
    if untrained.any():
        row = int(np.argmax(untrained))
        warn(
            f"{int(untrained.sum())} interactions of {split_file.path} hold items that never occur in "
            f"{train_name} (first: item {_plain(split_file.items[row])!r} on line {lines[row]}); no model "
            "has trained on them. List them as cold items (cold_items.txt) to evaluate them apart"
        )


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _reject(bad: np.ndarray, split_file: SplitFile, lines: np.ndarray, kind: str, reason: str) -> None:
    if bad.any():
        row = int(np.argmax(bad))
        raw = (split_file.users if kind == "user" else split_file.items)[row]
        raise DataError(f"{split_file.path}, line {lines[row]}: {kind} {_plain(raw)!r} {reason}")
