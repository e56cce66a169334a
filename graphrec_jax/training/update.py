"""Incremental training: `update_from_workdir(workdir, interactions, steps=...)`.

An update restores a workdir's latest checkpoint (parameters, Adam moments, step and base key),
grows the dataset by the new interactions (new users and items get fresh rows: N(0, init_std)
parameters from the run's seeded initialiser, zero Adam moments), builds the grown run with
`run.build_run`, draws its triples from the new pairs plus a seeded replay sample of the old ones
(`replay` old pairs per new pair), trains `steps` steps with the library loop, and writes the
result as a new checkpoint step in the same workdir: id maps extended, nothing on disk changed.
`Recommender.from_checkpoint` then serves it (its "best" is the latest update), and the next
update continues from it. `scripts/update.py` is the command line.

Supported: models on id embeddings (`model.fusion="graph_only"`, without semantic item links);
a text model's new items need their text, which an update does not read (serve new users of a
text model with `Recommender.add_interactions`, or retrain).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from graphrec_jax.checkpoint import CheckpointError, CheckpointStore, has_checkpoints
from graphrec_jax.config import ConfigError, config_to_json
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.readers import read_table, unify_ids
from graphrec_jax.data.types import Dataset, IdMap, Interactions
from graphrec_jax.files import write_atomic
from graphrec_jax.serving import foldin
from graphrec_jax.serving.recommender import _restored_dataset
from graphrec_jax.training import hooks
from graphrec_jax.training.loop import train_loop
from graphrec_jax.training.run import TrainingRun, build_run

log = logging.getLogger(__name__)

DEFAULT_STEPS = 800
DEFAULT_REPLAY = 1.0
_TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def read_interactions(path: str | Path, config) -> pd.DataFrame:
    """New interactions from a csv/tsv/parquet file, read with the training data's settings
    (`data.user_column`, `item_column`, `rating_column`, `timestamp_column`, `separator`;
    `data.rating_threshold` drops low ratings as training did). Returns columns user, item (raw
    ids as written) and any of rating, timestamp. Raises DataError naming the file."""
    path = Path(path)
    suffixes = [suffix.lower() for suffix in path.suffixes]
    file_format = next((_TABLE_FORMATS[suffix] for suffix in suffixes if suffix in _TABLE_FORMATS), None)
    if file_format is None:
        raise DataError(f"{path}: expected a .csv, .tsv or .parquet file of new interactions")
    data = config.data
    table = read_table(
        path,
        file_format=file_format,
        user_column=data.user_column,
        item_column=data.item_column,
        rating_column=data.rating_column,
        timestamp_column=data.timestamp_column,
        separator=data.separator if data.format in ("csv", "tsv") else "",
    ).interactions
    threshold = data.rating_threshold
    if threshold is not None and "rating" in table.columns:
        table = table[table["rating"] >= threshold].reset_index(drop=True)
    return table


def matched_ids(values, id_map: IdMap) -> list:
    """Raw ids as the data layer unifies them with `id_map`'s: an id written as a canonical integer
    ("42") matches an integer id; anything else stays as written."""
    values = list(values)
    if not len(id_map) or not all(isinstance(value, int | np.integer) for value in id_map.raw_ids[:1000]):
        return [value if isinstance(value, str) else foldin.plain_id(value) for value in values]
    distinct = list(dict.fromkeys(values))
    unified = {value: unify_ids([np.asarray([value], dtype=object)])[0][0] for value in distinct}
    return [foldin.plain_id(unified[value]) for value in values]


def update_from_workdir(
    workdir: str | Path,
    interactions: pd.DataFrame | str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    replay: float = DEFAULT_REPLAY,
    log_every: int = 50,
) -> dict[str, Any]:
    """Trains `steps` steps on new interactions, warm-started from `workdir`'s latest checkpoint,
    and saves a new checkpoint step there (see the module docstring).

    Args:
      workdir: a training workdir (`scripts/train.py`, or an earlier update).
      interactions: a file path (read by `read_interactions`) or a DataFrame with columns user and
        item (raw ids; others ignored).
      steps: training steps (0 adds the rows and fresh rows only).
      replay: old training pairs drawn per new pair into the steps' triples (seeded by the config
        seed and the restored step); 0 trains on the new pairs alone.
      log_every: how often the loss is checked (`hooks.LossMonitor`).

    Returns:
      {"step", "from_step", "new_users", "new_items", "new_interactions", "known_interactions",
      "replayed", "steps", "loss" (mean of the last steps' losses, None without steps), "seconds"}.
    Raises CheckpointError (no checkpoint), ConfigError (a model updates do not support), DataError
    (bad rows), NonFiniteLossError. Host driver, not jittable.
    """
    started = time.perf_counter()
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ConfigError(f"steps={steps!r} must be an integer >= 0")
    if isinstance(replay, bool) or not isinstance(replay, int | float) or not replay >= 0:
        raise ConfigError(f"replay={replay!r} must be a number >= 0 (old pairs drawn per new pair)")
    if not has_checkpoints(workdir):
        raise CheckpointError(f"no checkpoints in {Path(workdir).resolve()}: train first with scripts/train.py")
    reader = CheckpointStore(workdir, read_only=True)
    from_step, restored, arrays, metadata = reader.restore(None, None)
    reader.close()
    try:
        config, dataset = _restored_dataset(metadata, arrays)
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {reader.directory / str(from_step)} does not describe a model this version can update "
            f"({type(error).__name__}: {error})"
        ) from None
    _check_updatable(config)
    table = read_interactions(interactions, config) if isinstance(interactions, str | Path) else interactions
    raw_users, raw_items = foldin.read_pairs(table, *_id_columns(table))
    raw_users, raw_items = matched_ids(raw_users, dataset.user_map), matched_ids(raw_items, dataset.item_map)
    grown, new_pairs, counts = grow_dataset(dataset, raw_users, raw_items)
    sample = replay_sample(grown.train, len(dataset.train), new_pairs, replay, seed=[config.seed, from_step])

    run_config = config.copy_and_resolve_references()
    run_config.train.steps_per_call = 1  # the sampled pairs are drawn on the host
    run = build_run(run_config, grown, sample_from=sample)
    load_grown_state(run, restored, dataset.num_users, dataset.num_items)
    losses = hooks.LossMonitor(log_every)
    limit = hooks.StepLimit(steps)
    if steps:
        start = run.step
        num_epochs = start // run.batches_per_epoch + -(-steps // run.batches_per_epoch) + 1
        train_loop(run, num_epochs=num_epochs, hooks=[losses, limit])
        losses.flush()
    writer = CheckpointStore(
        workdir, keep=config.train.keep_checkpoints, best_metric=metadata.get("best_metric", "") or ""
    )
    try:
        step = max(run.step, max(writer.steps(), default=0) + 1)
        summary = {
            "kind": "update",
            "from_step": from_step,
            **counts,
            "replayed": len(sample) - len(new_pairs),
            "steps": int(steps),
        }
        save_run(writer, run, step, grown_metadata(metadata, grown, counts["new_items"], summary))
    finally:
        writer.close()
    tail = limit.losses[-min(len(limit.losses), max(1, log_every)) :]
    return {
        "step": step,
        **summary,
        "loss": float(np.mean(tail)) if tail else None,
        "seconds": time.perf_counter() - started,
    }


def _check_updatable(config) -> None:
    if config.model.fusion != "graph_only" or config.model.text.get("semantic_k", 0):
        raise ConfigError(
            f"incremental updates train models on id embeddings (model.fusion='graph_only', no semantic item "
            f"links); this one has model.fusion={config.model.fusion!r}: serve its new users with "
            "Recommender.add_interactions, or retrain with scripts/train.py in a new --workdir"
        )


def _id_columns(table) -> tuple[str, str]:
    """The id columns of a table: (user, item) as `read_interactions` names them, else user_id, item_id."""
    if isinstance(table, pd.DataFrame) and {"user", "item"} <= set(table.columns):
        return "user", "item"
    return "user_id", "item_id"


def grow_dataset(dataset: Dataset, raw_users: list, raw_items: list) -> tuple[Dataset, Interactions, dict]:
    """`dataset` grown by interactions in raw ids: new users and items appended to the id maps,
    pairs already known (or repeated) dropped. Returns (grown dataset, the new pairs as indices,
    counts {"new_users", "new_items", "new_interactions", "known_interactions"})."""
    new_users = [user for user in dict.fromkeys(raw_users) if user not in dataset.user_map]
    new_items = [item for item in dict.fromkeys(raw_items) if item not in dataset.item_map]
    user_map = foldin.grown_id_map(dataset.user_map, new_users)
    item_map = foldin.grown_id_map(dataset.item_map, new_items)
    users = user_map.to_index(raw_users).astype(np.int64)
    items = item_map.to_index(raw_items).astype(np.int64)
    old = dataset.train
    stride = len(item_map)
    known = np.unique(old.users.astype(np.int64) * stride + old.items)
    keys = users * stride + items
    keep = np.zeros(len(keys), bool)
    keep[np.unique(keys, return_index=True)[1]] = True
    keep &= ~np.isin(keys, known)
    pairs = Interactions(users[keep], items[keep])
    train = Interactions(np.concatenate([old.users, pairs.users]), np.concatenate([old.items, pairs.items]))
    grown = Dataset(
        user_map=user_map,
        item_map=item_map,
        train=train,
        evaluation={},
        name=dataset.name,
        social=dataset.social,  # user indices are unchanged: new users come after the known ones
    )
    counts = {
        "new_users": len(new_users),
        "new_items": len(new_items),
        "new_interactions": len(pairs),
        "known_interactions": int(np.sum(~keep)),
    }
    return grown, pairs, counts


def replay_sample(train: Interactions, num_old: int, new_pairs: Interactions, replay: float, *, seed) -> Interactions:
    """The pairs an update draws its triples from: the new pairs (the last ones of `train`, which
    begins with the `num_old` old pairs) plus `round(replay * new)` old pairs drawn uniformly
    without replacement (at most all of them)."""
    rng = np.random.default_rng(seed)
    count = min(num_old, int(round(replay * len(new_pairs))))
    chosen = np.sort(rng.choice(num_old, size=count, replace=False)) if count else np.zeros(0, np.int64)
    rows = np.concatenate([chosen, np.arange(num_old, len(train))])
    if not len(rows):
        raise DataError("no new interactions to train on: every row is already a training interaction")
    return train.subset(rows)


def load_grown_state(run: TrainingRun, restored: dict, old_users: int, old_items: int) -> None:
    """Places a restored state (plain dicts, `CheckpointStore.restore(None, None)`) into a grown run.

    Node-row tables (the embedding and its Adam moments) keep their old rows at the users' and
    items' new places; new rows keep the run's fresh values (initialised parameters, zero moments).
    Entries the checkpoint lacks (a served state's optimizer) keep the run's; the step and base key
    are the checkpoint's."""
    template, rng = run.host_state()
    source = {_path_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(restored["train_state"])[0]}
    num_users = run.setup.dataset.num_users
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    merged, missing = [], []
    for path, leaf in leaves:
        value = source.get(_path_key(path))
        leaf = np.asarray(leaf)
        if value is None:
            missing.append(jax.tree_util.keystr(path))
            merged.append(leaf)
            continue
        value = np.asarray(value, leaf.dtype)
        if value.shape == leaf.shape:
            merged.append(value)
        elif _path_key(path)[-1:] == ("node_embedding",) and value.shape == (old_users + old_items, *leaf.shape[1:]):
            grown = leaf.copy()
            grown[:old_users] = value[:old_users]
            grown[num_users : num_users + old_items] = value[old_users:]
            merged.append(grown)
        else:
            raise CheckpointError(
                f"checkpoint entry {jax.tree_util.keystr(path)} has shape {value.shape}, the grown model needs "
                f"{leaf.shape}: the checkpoint was written by another model"
            )
    if missing:
        log.info("the checkpoint lacks %s: those start fresh", ", ".join(missing))
    state = jax.tree_util.tree_unflatten(treedef, merged)
    run.load_state(state, np.asarray(restored.get("rng", rng)))


def _path_key(path) -> tuple[str, ...]:
    """A pytree path as plain names, the same for a `TrainState` and its restored dicts."""
    names = []
    for entry in path:
        for attribute in ("name", "key", "idx"):
            if hasattr(entry, attribute):
                names.append(str(getattr(entry, attribute)))
                break
    return tuple(names)


def grown_metadata(metadata: dict, dataset: Dataset, new_items: int, summary: dict) -> dict:
    """A checkpoint's metadata for its grown dataset: id maps and sizes updated, item lists extended
    (new items: no title, no categories), evaluation metrics and served representations dropped."""
    grown = {key: value for key, value in metadata.items() if key not in ("metrics", "served_representations")}
    grown["id_maps"] = {"user": dataset.user_map.to_json(), "item": dataset.item_map.to_json()}
    grown["dataset"] = {
        "name": dataset.name,
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_train": len(dataset.train),
    }
    for key, empty in (("item_titles", ""), ("item_categories", []), ("item_text", {})):
        if grown.get(key) is not None:
            grown[key] = list(grown[key]) + [empty] * new_items
    grown["dynamic"] = summary
    return grown


def save_run(store: CheckpointStore, run: TrainingRun, step: int, metadata: dict) -> None:
    """Writes `run` as checkpoint `step` with `metadata`, both steps (the state's and the
    metadata's) set to `step`: an update without training steps still takes the next step."""
    state, rng = run.host_state()
    state = state.replace(step=np.asarray(step, np.asarray(state.step).dtype))
    store.save(step, {"train_state": state, "rng": rng}, run.serving_arrays(), dict(metadata, step=step))


def write_run(workdir: str | Path, run: TrainingRun, *, epoch: int) -> int:
    """Writes a run built outside `workdir.train_and_evaluate` (a benchmark's, a test's) as a checkpoint
    of `workdir` with training's metadata, so that updates and the Recommender can start from it."""
    from graphrec_jax.training.workdir import _metadata

    store = CheckpointStore(workdir, keep=run.config.train.keep_checkpoints)
    try:
        step = run.step
        save_run(store, run, step, dict(_metadata(run.config, run.setup.dataset, ""), epoch=epoch))
    finally:
        store.close()
    write_atomic(Path(workdir) / "config.json", config_to_json(run.config))
    return step


__all__ = [
    "DEFAULT_REPLAY",
    "DEFAULT_STEPS",
    "grow_dataset",
    "grown_metadata",
    "load_grown_state",
    "matched_ids",
    "read_interactions",
    "replay_sample",
    "update_from_workdir",
    "write_run",
]
