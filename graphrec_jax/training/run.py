"""Building a training run: everything one run needs, from a config, in one place.

`build_run(config)` validates the config, prepares the dataset, builds the model setup, the
optimizer, the replicated train state, the batch source, the per-run constants and the
pmapped step, and returns them as a `TrainingRun`. `loop.train_loop` drives it; the script,
the benchmarks and the test workers all build their runs here, so every figure comes from the
loop users run. This is where `config.train`, `config.sampling` and `config.eval` are read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from graphrec_jax import config as config_edge
from graphrec_jax import devices
from graphrec_jax.checkpoint import CheckpointStore, has_checkpoints
from graphrec_jax.config import ConfigError, validate_config
from graphrec_jax.data.errors import DataError
from graphrec_jax.data.prepare import prepare_dataset
from graphrec_jax.data.types import Dataset, Interactions
from graphrec_jax.graph.subgraphs import NeighborSampler
from graphrec_jax.models.network import TEXT_FUSIONS
from graphrec_jax.models.setup import ModelSetup, build_setup, init_params
from graphrec_jax.optimizers import make_optimizer
from graphrec_jax.serving.evaluation import evaluate_model
from graphrec_jax.training.batches import FullGraphBatches, TripleSampler
from graphrec_jax.training.finetuning import TEXT_PARAMS, TextFinetuning
from graphrec_jax.training.step import TrainState, create_train_state, make_train_step


@dataclasses.dataclass
class TrainingRun:
    """A run's parts. Host values are numpy; `state`, `rng` and `constants` live on the devices
    (replicated, leading axis = local devices).

    Attributes:
      config: the validated run config.
      setup: dataset, graph, model and text features (`models.setup.ModelSetup`).
      optimizer: the optax transformation of `state`.
      train_step: the pmapped step, `(state, batch, rng) -> (state, metrics)`, state donated.
      source: the batch source (`batches.FullGraphBatches`, `sampled.SampledSubgraphBatches`,
        possibly wrapped for fine-tuning and prefetching): `batches_per_epoch`, `epoch(e, first)`.
      constants: per-run `Batch` fields (the graph, text features), replicated once.
      state: the replicated `TrainState`.
      rng: the replicated base key; each step folds in its step number and device index.
      finetuning: the text tower's fine-tuning glue, or None.
      operators: for a model trained on subgraphs, the operators its hops estimate (evaluation
        propagates over them); None otherwise.
      block_step, table, steps_per_call: with `train.steps_per_call > 1`, the pmapped call that
        runs that many steps on batches drawn on device (`device_sampling`), and the replicated
        table of training items it draws from; `train_step` and `source` then only set the pace.
    """

    config: ml_collections.ConfigDict
    setup: ModelSetup
    optimizer: optax.GradientTransformation
    train_step: Any
    source: Any
    constants: dict
    state: TrainState
    rng: Any
    finetuning: TextFinetuning | None = None
    operators: list | None = None
    block_step: Any = None
    table: Any = None
    steps_per_call: int = 1

    @property
    def step(self) -> int:
        """The number of steps taken (reads the device state)."""
        return int(devices.unreplicate(self.state.step))

    @property
    def batches_per_epoch(self) -> int:
        return self.source.batches_per_epoch

    def host_state(self) -> tuple[TrainState, np.ndarray]:
        """(train state, base key) as host numpy, one copy."""
        return devices.unreplicate(self.state), devices.unreplicate(self.rng)

    def params(self) -> dict:
        """The current parameters as host numpy."""
        return devices.unreplicate(self.state.params)

    def load_state(self, state: TrainState, rng: np.ndarray, text_features: np.ndarray | None = None) -> None:
        """Places a restored host state (and the fine-tuned text features it was saved with)."""
        self.state = devices.replicate(state)
        self.rng = devices.replicate(np.asarray(rng))
        if text_features is not None:
            self._set_text_features(np.asarray(text_features))

    def refresh_text_features(self) -> None:
        """Re-encodes every item with the fine-tuned tower as trained so far; users' profiles and
        the items a step does not re-encode read these. Nothing without fine-tuning."""
        if self.finetuning is not None:
            trainable = devices.unreplicate(self.state.params[TEXT_PARAMS])
            self._set_text_features(self.finetuning.node_features(trainable))

    def _set_text_features(self, features: np.ndarray) -> None:
        self.setup = dataclasses.replace(self.setup, text_features=features)
        if "text_features" in self.constants:
            self.constants = {**self.constants, "text_features": devices.replicate(features)}

    def evaluate(self) -> dict[str, Any]:
        """Full-ranking metrics on every evaluation split, keys like "test/recall@20"."""
        config = self.config
        return evaluate_model(
            self.setup,
            self.params(),
            ks=config_edge.cutoffs(config),
            chunk_size=config.eval.user_chunk_size,
            backend=config.model.aggregation,
            operators=self.operators,
            chunk_rows=config.sampling.inference_chunk_rows,
        )

    def serving_arrays(self) -> dict[str, np.ndarray]:
        """What a checkpoint must hold besides the state for a restored model to serve."""
        dataset = self.setup.dataset
        arrays = {"train_users": dataset.train.users, "train_items": dataset.train.items}
        if dataset.social is not None:
            arrays["social_users"], arrays["social_friends"] = dataset.social.users, dataset.social.friends
        if self.setup.text_features is not None:
            arrays["text_features"] = self.setup.text_features
        return arrays


def build_run(
    config: ml_collections.ConfigDict, dataset: Dataset | None = None, *, sample_from: Interactions | None = None
) -> TrainingRun:
    """Builds a run from `config` with freshly initialised parameters.

    Args:
      config: the run config; validated here.
      dataset: the data, when the caller already has it; None prepares `config.data`.
      sample_from: training pairs (a subset of `dataset.train`) to draw the triples from, for an
        incremental update (`training.update`); None: every training pair. The graph is the
        whole training set either way.

    Raises ConfigError or DataError before anything is built when the config or the data is
    invalid. Not jittable (host set-up; it compiles nothing until the first step).
    """
    validate_config(config)
    shards = jax.device_count()
    if config.train.batch_size % shards:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} must be divisible by the {shards} devices; "
            f"use a multiple of {shards}"
        )
    dataset = prepare_dataset(config.data) if dataset is None else dataset
    finetuning = None
    text_features = None
    if config.model.fusion in TEXT_FUSIONS and config.model.text.regime == "finetune":
        from graphrec_jax.text.features import load_text_encoder

        text = config.model.text
        finetuning = TextFinetuning(
            dataset,
            load_text_encoder(text),
            freeze_layers=text.freeze_layers,
            pooling=text.pooling,
            dtype=text.dtype,
            items_per_step=text.finetune_items_per_step,
            item_fields=config.data.text.item_fields,
            user_fields=config.data.text.user_fields,
            seed=config.seed,
            cache_dir=text.cache_dir or None,
        )
        text_features = finetuning.node_features(finetuning.initial_params())
    setup = build_setup(config, dataset, text_features=text_features)

    text_learning_rate = None if finetuning is None else config.model.text.learning_rate
    optimizer = make_optimizer(config.train.learning_rate, text_learning_rate=text_learning_rate, text_key=TEXT_PARAMS)
    params = init_params(setup, config.seed)
    if finetuning is not None:
        params[TEXT_PARAMS] = finetuning.initial_params()
    state = jax.tree.map(np.asarray, create_train_state(params, optimizer))

    operators = neighbors = None
    if config.sampling.mode == "sampled":
        sampling = config.sampling
        neighbors = NeighborSampler(
            setup.graph,
            dataset.num_users,
            config_edge.fanouts(config),
            sampling.method,
            num_walks=sampling.num_walks,
            walk_length=sampling.walk_length,
            seed=sampling.seed,
        )
        operators = neighbors.hop_operators()
    if sample_from is not None and config.train.steps_per_call > 1:
        raise ConfigError("sample_from draws batches on the host: build the run with train.steps_per_call=1")
    source = make_batch_source(config, setup, finetuning, neighbors, sample_from=sample_from)
    train_step_fn = make_train_step(
        setup.model,
        optimizer,
        loss=config.train.loss,
        l2_weight=config.train.l2_weight,
        softmax_temperature=config.train.softmax_temperature,
        num_users=dataset.num_users,
        text_tower=None if finetuning is None else finetuning.tower,
        align_weight=config.train.align_weight,
        align_temperature=config.train.align_temperature,
    )
    train_step = jax.pmap(train_step_fn, axis_name=devices.AXIS, donate_argnums=(0,))
    constants = source.constants(setup.graph, setup.text_features)
    block_step = table = None
    if config.train.steps_per_call > 1:
        block_step, table = _device_sampling(config, setup, finetuning, train_step_fn)
    return TrainingRun(
        config=config,
        setup=setup,
        optimizer=optimizer,
        train_step=train_step,
        source=source,
        constants=devices.replicate(constants) if constants else {},
        state=devices.replicate(state),
        rng=devices.replicate(np.asarray(jax.random.PRNGKey(config.seed))),
        finetuning=finetuning,
        operators=operators,
        block_step=block_step,
        table=None if table is None else devices.replicate(table),
        steps_per_call=config.train.steps_per_call,
    )


def _device_sampling(config, setup: ModelSetup, finetuning, train_step_fn):
    """The block step and the table of training items for `train.steps_per_call > 1`."""
    from graphrec_jax.training import device_sampling

    if config.sampling.mode != "full" or finetuning is not None:
        raise ConfigError(
            f"train.steps_per_call={config.train.steps_per_call} draws batches on device for full-graph "
            "training; it cannot feed sampled subgraphs (sampling.mode='sampled') or a fine-tuned text tower "
            "(model.text.regime='finetune'): set train.steps_per_call=1"
        )
    dataset = setup.dataset
    pool = np.arange(dataset.num_items) if config.train.negative_items == "all" else np.unique(dataset.train.items)
    table = device_sampling.PositiveTable.build(dataset.num_users, dataset.train.users, dataset.train.items, pool)
    block = device_sampling.make_block_step(
        train_step_fn,
        batch_size=config.train.batch_size,
        num_negatives=config.train.num_negatives,
        num_interactions=len(dataset.train),
        num_devices=devices.num_local_devices(),
        process_index=jax.process_index(),
        sampling_seed=config.seed,
    )
    return device_sampling.pmap_block(block), table


def make_batch_source(
    config: ml_collections.ConfigDict,
    setup: ModelSetup,
    finetuning=None,
    neighbors=None,
    *,
    sample_from: Interactions | None = None,
):
    """The batch source `config.sampling.mode` asks for, fed by LightGCN's triple sampler.

    "full" propagates over the whole graph every step; "sampled" over each batch's padded
    neighbourhood subgraph drawn by `neighbors`. Negatives come from every item
    (`train.negative_items="all"`, LightGCN's protocol) or from the items with training
    interactions ("trained", the default: a cold item drawn only ever as a negative would teach
    the model to bury every new item). With `sampling.prefetch_batches > 0`, sampled subgraphs
    and fine-tuning batches are prepared and placed that many ahead of the step by a host thread.
    `sample_from` (a subset of the training pairs) limits the positives drawn to it; negatives
    still avoid every training pair.
    """
    dataset = setup.dataset
    negative_items = None if config.train.negative_items == "all" else np.unique(dataset.train.items)
    pool = dataset.num_items if negative_items is None else len(negative_items)
    degree = np.bincount(dataset.train.users, minlength=dataset.num_users)
    if np.any(degree >= pool):
        user = dataset.user_map.raw_ids[int(np.flatnonzero(degree >= pool)[0])]
        raise DataError(
            f"{dataset.name}: user {user!r} has a training interaction with every item that can be a negative "
            f"({pool}), so no negative can be drawn for them; remove that user's rows from the data, or with "
            "train.negative_items='trained' give the data items that some user has not interacted with"
        )
    positives = dataset.train if sample_from is None else sample_from
    sampler = TripleSampler(
        dataset.num_users,
        dataset.num_items,
        positives.users,
        positives.items,
        seed=config.seed,
        negative_items=negative_items,
    )
    if sample_from is not None:  # a negative must not be any training pair, sampled or not
        train = dataset.train
        sampler.keys = np.unique(train.users.astype(np.int64) * dataset.num_items + train.items)
    placement = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if config.sampling.mode == "sampled":
        from graphrec_jax.training.sampled import SampledSubgraphBatches

        source = SampledSubgraphBatches(
            sampler,
            neighbors,
            config.train.batch_size,
            config.train.num_negatives,
            devices.num_local_devices(),
            seed=config.sampling.seed,
            node_budget=config.sampling.node_budget,
            edge_budget=config.sampling.edge_budget,
            **placement,
        )
    else:
        source = FullGraphBatches(
            sampler, config.train.batch_size, config.train.num_negatives, devices.num_local_devices(), **placement
        )
    if finetuning is not None:
        source = finetuning.wrap(source)
    # A host thread pays for batches whose preparation costs (subgraphs, text items); a
    # full-graph batch is a slice of the epoch's triples, cheaper than the hand-over.
    if config.sampling.prefetch_batches > 0 and (config.sampling.mode == "sampled" or finetuning is not None):
        from graphrec_jax.training.producer import PrefetchedBatches

        source = PrefetchedBatches(source, config.sampling.prefetch_batches)
    return source


def initial_params_from(workdir: str | Path, params: dict) -> dict:
    """`params` with every entry that another run's best checkpoint holds, at the same shape.

    Raises ValueError naming the entry when a shape differs (the runs' models disagree).
    """
    if not has_checkpoints(workdir):
        raise ConfigError(f"train.init_from={str(workdir)!r} holds no checkpoints; point it at another run's workdir")
    store = CheckpointStore(workdir, read_only=True)
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
            raise ConfigError(
                f"train.init_from: parameter {jax.tree_util.keystr(path)} has shape {np.shape(value)} in "
                f"{workdir} but {np.shape(leaf)} here; the two runs' models must match"
            )
        merged.append(np.asarray(value, dtype=np.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, merged)
