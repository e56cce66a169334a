"""The training loop: `train_and_evaluate(config, workdir)`.

Host code lives here (sampling, batching, logging, evaluation schedule, checkpoints); the
compiled work is the pmapped `steps.train_step`. A run resumes from the latest checkpoint
in its workdir, and since every epoch's triples depend only on (seed, epoch), a resumed
run replays exactly what an uninterrupted run does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jraph
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from graphrec_jax import devices, steps
from graphrec_jax.checkpoint import CheckpointStore, has_checkpoints
from graphrec_jax.config import config_to_json, parse_int_list, validate_config
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.data.types import Dataset
from graphrec_jax.evaluation import csr_by_user, evaluate_split
from graphrec_jax.graph import build_interaction_graph
from graphrec_jax.model import TEXT_FUSIONS, RecommenderModel, build_model
from graphrec_jax.sampling import FullGraphBatches, TripleSampler
from graphrec_jax.text.finetune import TEXT_PARAMS, make_finetune_optimizer

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped before saving the bad state."""


@dataclasses.dataclass
class TrainingSetup:
    """What a run (or a restored model) is built from. Host-side numpy except `model`."""

    dataset: Dataset
    graph: jraph.GraphsTuple
    model: RecommenderModel
    text_features: np.ndarray | None  # [n_node, text_dim] float32
    text_finetuning: Any = None  # a text_features.TextFinetuning in the fine-tuned text regime


def build_setup(
    config: ml_collections.ConfigDict, dataset: Dataset, *, text_features: np.ndarray | None = None
) -> TrainingSetup:
    """Graph, model and text features for `dataset` as `config` describes them.

    `text_features` (`[n_node, text_dim]`) skips encoding when they are already known, as
    when a checkpoint is restored.
    """
    graph = build_interaction_graph(dataset.num_users, dataset.num_items, dataset.train.users, dataset.train.items)
    model = build_model(config.model, dataset.num_users + dataset.num_items)
    finetuning = None
    if config.model.fusion in TEXT_FUSIONS and config.model.text.regime == "finetune" and text_features is None:
        from graphrec_jax.text_features import TextFinetuning, load_text_encoder

        finetuning = TextFinetuning(config, dataset, load_text_encoder(config))
        text_features = finetuning.node_features(finetuning.initial_params())
    elif text_features is None and config.model.fusion in TEXT_FUSIONS:
        from graphrec_jax.text_features import node_text_features

        text_features = node_text_features(config, dataset)
    return TrainingSetup(
        dataset=dataset, graph=graph, model=model, text_features=text_features, text_finetuning=finetuning
    )


def init_params(setup: TrainingSetup, seed: int):
    """Initial parameters (host numpy tree), deterministic for `seed`."""
    rng = jax.random.PRNGKey(seed)
    variables = jax.jit(setup.model.init)(rng, setup.graph, setup.text_features)
    params = dict(variables["params"])
    if setup.text_finetuning is not None:
        params[TEXT_PARAMS] = setup.text_finetuning.initial_params()
    return jax.tree.map(np.asarray, params)


def initial_params_from(workdir: str | Path, params: dict) -> dict:
    """`params` with every entry that another run's best checkpoint holds, at the same shape.

    Raises ValueError naming the entry when a shape differs (the runs' models disagree).
    """
    if not has_checkpoints(workdir):
        raise FileNotFoundError(f"train.init_from={str(workdir)!r} holds no checkpoints")
    store = CheckpointStore(workdir, read_only=True)
    store.best_metric = store.read_metadata(store.steps()[-1]).get("best_metric", "")
    _, state, _, _ = store.restore(None, None, step=store.best_step())
    store.close()
    source = state["train_state"]["params"]
    flat_source = dict(jax.tree_util.tree_flatten_with_path(source)[0])
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    merged = []
    for path, leaf in leaves:
        value = flat_source.get(path)
        if value is None:
            merged.append(leaf)
            continue
        if np.shape(value) != np.shape(leaf):
            raise ValueError(
                f"train.init_from: parameter {jax.tree_util.keystr(path)} has shape {np.shape(value)} in "
                f"{workdir} but {np.shape(leaf)} here; the two runs' models must match"
            )
        merged.append(np.asarray(value, dtype=np.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, merged)


def make_optimizer(config, setup: TrainingSetup):
    """Adam over the model's parameters, with the text tower's own learning rate when it is fine-tuned."""
    if setup.text_finetuning is None:
        return steps.make_optimizer(config.train)
    return make_finetune_optimizer(config.train.learning_rate, config.model.text.learning_rate)


def make_pmapped_train_step(config, setup: TrainingSetup, optimizer):
    """The train step for `setup`, pmapped over the local devices (its state argument donated)."""
    finetuning = setup.text_finetuning
    return jax.pmap(
        steps.make_train_step(
            setup.model,
            optimizer,
            config.train,
            num_users=setup.dataset.num_users,
            text_tower=None if finetuning is None else finetuning.tower,
        ),
        axis_name=steps.AXIS,
        donate_argnums=(0,),
    )


def make_batch_source(config: ml_collections.ConfigDict, setup: TrainingSetup):
    """The batch source `config.sampling.mode` asks for, fed by LightGCN's triple sampler.

    "full" propagates over the whole graph every step; "sampled" over each batch's padded
    neighbourhood subgraph. With `sampling.prefetch_batches > 0` a host thread prepares and
    places that many batches ahead of the step.
    """
    dataset = setup.dataset
    sampler = TripleSampler(
        dataset.num_users,
        dataset.num_items,
        dataset.train.users,
        dataset.train.items,
        seed=config.seed,
        negative_items=np.unique(dataset.train.items),
    )
    if config.sampling.mode == "sampled":
        from graphrec_jax.neighbor_sampling import make_sampled_source

        source = make_sampled_source(config, setup, sampler, devices.num_local_devices())
    else:
        source = FullGraphBatches(
            sampler,
            config.train.batch_size,
            config.train.num_negatives,
            devices.num_local_devices(),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    if setup.text_finetuning is not None:
        source = setup.text_finetuning.wrap(source)
    if config.sampling.prefetch_batches > 0:
        from graphrec_jax.prefetch import PrefetchedBatches

        source = PrefetchedBatches(source, config.sampling.prefetch_batches)
    return source


def evaluate_model(
    config: ml_collections.ConfigDict, setup: TrainingSetup, params, *, representations=None
) -> dict[str, Any]:
    """Full-ranking metrics on every evaluation split, keys like "test/recall@20"."""
    dataset = setup.dataset
    if representations is None and config.sampling.mode == "sampled":
        # Layer by layer in row chunks over the operators the sampled hops estimate.
        from graphrec_jax.inference import node_representations
        from graphrec_jax.neighbor_sampling import neighbor_sampler

        representations = node_representations(
            setup.model,
            params,
            setup.graph,
            setup.text_features,
            operators=neighbor_sampler(config, setup.graph, dataset.num_users).hop_operators(),
            chunk_rows=config.sampling.inference_chunk_rows,
            backend=_kernel_backend(config),
        )
    if representations is None:
        representations = jax.jit(steps.make_representation_fn(setup.model))(params, setup.graph, setup.text_features)
    users = representations[: dataset.num_users]
    items = representations[dataset.num_users :]
    train_by_user = csr_by_user(dataset.train, dataset.num_users)
    ks = sorted({config.eval.k, *parse_int_list(config.eval.extra_k, "eval.extra_k")})
    results = {}
    for name, split in dataset.evaluation.items():
        metrics = evaluate_split(
            users,
            items,
            split,
            train_by_user,
            ks,
            chunk_size=config.eval.user_chunk_size,
            backend=_kernel_backend(config),
        )
        results.update({f"{name}/{key}": value for key, value in metrics.items()})
    return results


def _kernel_backend(config) -> str:
    return {"auto": "auto", "native": "native", "segment_sum": "xla"}[config.model.aggregation]


def validation_split_name(config, dataset: Dataset) -> str:
    if config.eval.validation_split:
        if config.eval.validation_split not in dataset.evaluation:
            raise ValueError(
                f"eval.validation_split={config.eval.validation_split!r} is not one of the dataset's "
                f"splits {sorted(dataset.evaluation)}"
            )
        return config.eval.validation_split
    return "valid" if "valid" in dataset.evaluation else next(iter(dataset.evaluation))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and checkpoints in `workdir`; resumes from its latest checkpoint.

    Returns the last evaluation's metrics (with "epoch" and "step"). Raises ConfigError or
    DataError before anything is written when the config or the input is invalid, and
    NonFiniteLossError (leaving the last good checkpoint) when the loss diverges.
    """
    validate_config(config)
    dataset = prepare_dataset(config.data)
    setup = build_setup(config, dataset)
    shards = jax.device_count()
    if config.train.batch_size % shards:
        raise ValueError(f"train.batch_size={config.train.batch_size} must be divisible by the {shards} devices")
    validation = validation_split_name(config, dataset)
    best_metric = f"{validation}/{config.eval.best_metric}@{config.eval.k}"

    workdir = Path(workdir)
    primary = devices.is_primary_process()
    workdir.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(workdir, keep=config.train.keep_checkpoints, best_metric=best_metric)
    finetuning = setup.text_finetuning
    optimizer = make_optimizer(config, setup)
    params = init_params(setup, config.seed)
    state = steps.create_train_state(params, optimizer)
    state = jax.tree.map(np.asarray, state)
    rng = np.asarray(jax.random.PRNGKey(config.seed))
    metadata = _metadata(config, dataset, best_metric)

    if config.train.init_from and not has_checkpoints(workdir):
        params = initial_params_from(config.train.init_from, params)
        state = jax.tree.map(np.asarray, steps.create_train_state(params, optimizer))
    if has_checkpoints(workdir):
        step, restored, restored_arrays, saved = store.restore({"train_state": state, "rng": rng}, None)
        _check_same_run(saved, metadata, workdir)
        state, rng = restored["train_state"], np.asarray(restored["rng"])
        if finetuning is not None:  # the features of the last refresh, as the interrupted run had them
            setup.text_features = np.asarray(restored_arrays["text_features"])
        log.info("resumed from %s at step %d", store.directory, step)
    start_step = int(state.step)
    if primary:
        _truncate_metrics(workdir / METRICS_FILE, start_step)
        (workdir / "config.json").write_text(config_to_json(config))

    source = make_batch_source(config, setup)
    batches_per_epoch = source.batches_per_epoch
    train_step = make_pmapped_train_step(config, setup, optimizer)
    constants = devices.replicate(source.constants(setup.graph, setup.text_features))
    device_state = devices.replicate(state)
    device_rng = devices.replicate(rng)
    text_refreshed_at = start_step if finetuning is not None else None

    def refresh_text_features():
        # Re-encode every item with the tower as trained so far: users' profiles and the
        # items a step does not re-encode read these.
        nonlocal constants, text_refreshed_at
        trainable = devices.unreplicate(device_state.params[TEXT_PARAMS])
        setup.text_features = finetuning.node_features(trainable)
        constants = {**constants, "text_features": devices.replicate(setup.text_features)}
        text_refreshed_at = step

    num_epochs = config.train.num_epochs
    last_metrics: dict[str, Any] = {}
    pending: list[tuple[int, Any]] = []
    step = start_step
    epoch_losses: list[float] = []
    start_epoch = start_step // batches_per_epoch
    progress = tqdm(
        total=num_epochs * batches_per_epoch,
        initial=min(start_step, num_epochs * batches_per_epoch),
        disable=not (primary and config.train.progress_bar),
        unit="batch",
        dynamic_ncols=True,
    )
    for epoch in range(start_epoch, num_epochs):
        first_batch = step - epoch * batches_per_epoch
        progress.set_description(f"epoch {epoch + 1}/{num_epochs}")
        epoch_started = time.perf_counter()
        if finetuning is not None and first_batch == 0 and text_refreshed_at != step:
            refresh_text_features()
        for batch in source.epoch(epoch, first_batch):
            batch = devices.shard(batch)
            device_state, metrics = train_step(device_state, {**batch, **constants}, device_rng)
            step += 1
            pending.append((step, metrics["loss"]))
            if len(pending) >= config.train.log_every_steps:
                epoch_losses += _check_finite(pending)
                pending = []
                progress.set_postfix(loss=f"{epoch_losses[-1]:.4f}", refresh=False)
            progress.update(1)
            if config.train.checkpoint_every_steps and step % config.train.checkpoint_every_steps == 0:
                epoch_losses += _check_finite(pending)
                pending = []
                _save(store, step, epoch, device_state, device_rng, _serving_arrays(setup), metadata)
        epoch_losses += _check_finite(pending)
        pending = []
        epoch_seconds = time.perf_counter() - epoch_started
        finished = epoch + 1
        is_last = finished == num_epochs
        if (config.train.eval_every_epochs and finished % config.train.eval_every_epochs == 0) or is_last:
            if finetuning is not None:
                refresh_text_features()
            params = devices.unreplicate(device_state.params)
            metrics = evaluate_model(config, setup, params)
            record = {
                "epoch": finished,
                "step": step,
                "loss": float(np.mean(epoch_losses)) if epoch_losses else None,
                "epoch_seconds": epoch_seconds,
                **metrics,
            }
            last_metrics = record
            if primary:
                with open(workdir / METRICS_FILE, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                progress.write(f"epoch {finished} step {step}: {_summary(record, config.eval.k)}")
            _save(store, step, finished, device_state, device_rng, _serving_arrays(setup), metadata, metrics)
        epoch_losses = []
    progress.close()
    if step == start_step and start_step > 0:
        last_metrics = _last_logged(workdir / METRICS_FILE)
    store.close()
    if primary and config.train.plot_curves:
        from graphrec_jax.plots import plot_training_curves

        plot_training_curves(workdir / METRICS_FILE, workdir / "curves.png", k=config.eval.k)
    return last_metrics


def _serving_arrays(setup: TrainingSetup) -> dict[str, np.ndarray]:
    arrays = {"train_users": setup.dataset.train.users, "train_items": setup.dataset.train.items}
    if setup.text_features is not None:
        arrays["text_features"] = setup.text_features
    return arrays


def _metadata(config, dataset: Dataset, best_metric: str) -> dict[str, Any]:
    titles = None
    if dataset.item_text is not None:
        titles = [str((text or {}).get("title", "") or "") for text in dataset.item_text]
    return {
        "best_metric": best_metric,
        "item_titles": titles,
        "config": json.loads(config_to_json(config)),
        "id_maps": {"user": dataset.user_map.to_json(), "item": dataset.item_map.to_json()},
        "dataset": {"name": dataset.name, "num_users": dataset.num_users, "num_items": dataset.num_items},
        "evaluation": {
            name: (None if split.candidate_items is None else np.asarray(split.candidate_items).tolist())
            for name, split in dataset.evaluation.items()
        },
    }


def _save(store, step, epoch, device_state, device_rng, arrays, metadata, metrics=None):
    state = devices.unreplicate(device_state)
    rng = devices.unreplicate(device_rng)
    store.save(
        step,
        {"train_state": state, "rng": rng},
        arrays,
        dict(metadata, step=step, epoch=epoch),
        metrics=metrics,
    )


def _check_same_run(saved: dict, current: dict, workdir: Path) -> None:
    saved_config = saved.get("config", {})
    for section in ("data", "model"):
        if saved_config.get(section) != current["config"].get(section):
            raise ValueError(
                f"{workdir} holds checkpoints of a run with a different config.{section}; "
                "resume with the same config or use a new --workdir"
            )


def _check_finite(pending: list[tuple[int, Any]]) -> list[float]:
    values = [float(np.asarray(loss)[0]) for _, loss in pending]
    for (step, _), value in zip(pending, values, strict=True):
        if not np.isfinite(value):
            raise NonFiniteLossError(
                f"loss became {value} at step {step}; the last good checkpoint is kept. "
                "Lower train.learning_rate, or check the input data for extreme values"
            )
    return values


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops records written after the checkpoint being resumed from (a crash between
    logging and saving would otherwise log that evaluation twice)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def _last_logged(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line]
    return json.loads(lines[-1]) if lines else {}


def _summary(record: dict, k: int) -> str:
    keys = [key for key in record if key.endswith((f"recall@{k}", f"ndcg@{k}"))]
    parts = [f"loss {record['loss']:.4f}"] if record.get("loss") is not None else []
    return ", ".join(parts + [f"{key} {record[key]:.4f}" for key in keys])
