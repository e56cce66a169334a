"""Serving a trained model from Python: `Recommender.from_checkpoint(workdir)`.

The recommender restores the parameters, rebuilds the training graph from the
interactions saved with the checkpoint, computes every node's representation once, and
answers in raw ids. It never imports the training stack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from graphrec_jax.checkpoint import CheckpointError, CheckpointStore, has_checkpoints
from graphrec_jax.config import ConfigError, config_from_json, validate_config
from graphrec_jax.data.types import Dataset, IdMap, Interactions, SocialLinks
from graphrec_jax.models.network import TEXT_FUSIONS
from graphrec_jax.models.setup import ModelSetup, build_setup
from graphrec_jax.serving.propagation import inference_operators, node_representations
from graphrec_jax.serving.ranking import csr_by_user, top_k_items


class RequestError(ValueError):
    """Arguments a serving call cannot answer (a `k` that is not a positive integer, ...)."""


def check_k(k, name: str = "k") -> int:
    """`k` as an int; raises RequestError unless it is a positive integer (not a bool or a float)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise RequestError(f"{name}={k!r} must be a positive integer")
    return int(k)


class Recommender:
    """Top-K recommendations, scores and similar items, in raw ids.

    Build it with `Recommender.from_checkpoint(workdir)`. Attributes:
      config: the run's config.
      user_map, item_map: raw id <-> index maps.
      step: the checkpoint step the parameters come from.
    """

    def __init__(
        self,
        config,
        setup: ModelSetup,
        params: Any,
        *,
        step: int,
        item_titles: list[str] | None = None,
    ):
        self.config = config
        self.setup = setup
        self.params = params
        self.step = step
        self.user_map: IdMap = setup.dataset.user_map
        self.item_map: IdMap = setup.dataset.item_map
        self.item_titles = item_titles
        self._train_by_user = csr_by_user(setup.dataset.train, setup.dataset.num_users)
        self._refresh_representations()

    @classmethod
    def from_checkpoint(cls, workdir: str | Path, *, step: int | None = None, which: str = "best") -> Recommender:
        """Restores a trained model from a training workdir.

        Args:
          workdir: the `--workdir` of a training run.
          step: a specific checkpoint step; None picks by `which`.
          which: "best" (highest validation metric, falling back to the latest) or "latest".
        """
        if which not in ("best", "latest"):
            raise RequestError(f"which={which!r} must be 'best' or 'latest'")
        if not has_checkpoints(workdir):
            raise CheckpointError(
                f"no checkpoints in {Path(workdir).resolve()}: train first with "
                f"`python scripts/train.py --config configs/demo.py --workdir {workdir}`"
            )
        store = CheckpointStore(workdir, read_only=True)
        if step is None and which == "best":
            step = store.best_step()  # None when no checkpoint has the metric: the latest
        restored_step, state, arrays, metadata = store.restore(None, None, step=step)
        store.close()
        where = store.directory / str(restored_step)
        try:
            config, dataset = _restored_dataset(metadata, arrays)
            params = jax.tree.map(jnp.asarray, state["train_state"]["params"])
            _check_restored(config, dataset, params, arrays)
        except (ConfigError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {where} does not describe a model this version can serve ({type(error).__name__}: "
                f"{error}); its metadata or arrays were changed after it was written: restore another step, or retrain"
            ) from None
        text_features = arrays.get("text_features")
        setup = build_setup(config, dataset, text_features=None if text_features is None else np.asarray(text_features))
        return cls(config, setup, params, step=restored_step, item_titles=metadata.get("item_titles"))

    @property
    def user_ids(self) -> list:
        """Raw ids of every user the model knows."""
        return self.user_map.raw_ids.tolist()

    @property
    def item_ids(self) -> list:
        """Raw ids of every item the model knows."""
        return self.item_map.raw_ids.tolist()

    def _refresh_representations(self) -> None:
        values = node_representations(
            self.setup.model,
            self.params,
            self.setup.graph,
            self.setup.text_features,
            operators=inference_operators(self.config, self.setup),
            chunk_rows=self.config.sampling.inference_chunk_rows,
            backend=self.config.model.aggregation,
        )
        num_users = self.setup.dataset.num_users
        self.user_representations = values[:num_users]
        self.item_representations = values[num_users:]

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[Any] | None = None,
    ) -> pd.DataFrame:
        """Top-`k` items per user.

        Args:
          user_ids: raw user ids (a single id is accepted too).
          k: list length per user.
          exclude_seen: leave out each user's training items.
          candidates: raw item ids to choose from (None: every item).

        Returns:
          A DataFrame with columns user_id, rank (1-based), item_id, score; users with fewer
          than `k` candidates get fewer rows. Raises UnknownIdError for an unknown id.
        """
        user_ids = _as_list(user_ids)
        k = check_k(k)
        columns = ["user_id", "rank", "item_id", "score"]
        if not user_ids:
            return pd.DataFrame({column: [] for column in columns})
        users = self.user_map.to_index(user_ids, source="user_ids")
        candidate_items = None
        if candidates is not None:
            candidate_items = np.unique(self.item_map.to_index(_as_list(candidates), source="candidates"))
        k_eff = min(k, self.item_map.__len__())
        items, scores = top_k_items(
            self.user_representations,
            self.item_representations,
            users,
            k_eff,
            exclude=self._train_by_user if exclude_seen else None,
            candidate_items=candidate_items,
            user_chunk_size=min(self.config.eval.user_chunk_size, max(len(users), 1)),
            backend=self.config.model.aggregation,
        )
        return self._ranked_table(user_ids, items, scores, columns)

    def score(self, user_ids: Sequence[Any], item_ids: Sequence[Any]) -> np.ndarray:
        """Scores `[len(user_ids), len(item_ids)]` float32 (dot products of representations)."""
        users = self.user_map.to_index(_as_list(user_ids), source="user_ids")
        items = self.item_map.to_index(_as_list(item_ids), source="item_ids")
        user_rows = self.user_representations[jnp.asarray(users)]
        item_rows = self.item_representations[jnp.asarray(items)]
        return np.asarray(user_rows @ item_rows.T)

    def similar_items(self, item_ids: Sequence[Any], k: int = 10) -> pd.DataFrame:
        """The `k` most similar items to each item by cosine similarity of representations.

        Returns a DataFrame with columns item_id, rank, similar_item_id, score (the item
        itself excluded).
        """
        columns = ["item_id", "rank", "similar_item_id", "score"]
        return self._most_similar(item_ids, k, self.item_map, self.item_representations, columns)

    def similar_users(self, user_ids: Sequence[Any], k: int = 10) -> pd.DataFrame:
        """The `k` most similar users to each user by cosine similarity of their learned
        representations (in a social model, shaped by friends as well as items).

        Returns a DataFrame with columns user_id, rank, similar_user_id, score (the user
        itself excluded).
        """
        columns = ["user_id", "rank", "similar_user_id", "score"]
        return self._most_similar(user_ids, k, self.user_map, self.user_representations, columns)

    def _most_similar(self, ids, k, id_map: IdMap, representations, columns: list[str]) -> pd.DataFrame:
        ids = _as_list(ids)
        k = check_k(k)
        if not ids or len(id_map) < 2:
            return pd.DataFrame({column: [] for column in columns})
        rows = id_map.to_index(ids, source=f"{id_map.kind}_ids")
        normalized = representations / jnp.maximum(jnp.linalg.norm(representations, axis=-1, keepdims=True), 1e-12)
        own = np.arange(len(rows) + 1, dtype=np.int64)
        similar, scores = top_k_items(
            normalized[jnp.asarray(rows)],
            normalized,
            np.arange(len(rows)),
            min(k, len(id_map) - 1),
            exclude=(own, rows.astype(np.int32)),
            user_chunk_size=min(self.config.eval.user_chunk_size, max(len(rows), 1)),
            backend=self.config.model.aggregation,
        )
        return self._ranked_table(ids, similar, scores, columns, id_map)

    def _ranked_table(
        self, keys: list, items: np.ndarray, scores: np.ndarray, columns: list[str], id_map: IdMap | None = None
    ) -> pd.DataFrame:
        """One row per ranked entry (`items [len(keys), k]` indices into `id_map`, default the items;
        -1 for none): key, rank, raw id, score."""
        position, rank = np.nonzero(items >= 0)
        return pd.DataFrame(
            {
                columns[0]: [keys[index] for index in position],
                columns[1]: rank + 1,
                columns[2]: (id_map or self.item_map).raw_ids[items[position, rank]],
                columns[3]: scores[position, rank].astype(float),
            }
        )

    def add_items(
        self,
        item_ids: Sequence[Any],
        texts: Sequence[dict | str],
        *,
        encoder: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """Adds items nobody has interacted with yet, from their text alone; no retraining.

        Args:
          item_ids: new raw item ids (not already known).
          texts: per item, a dict of text fields (title, description, ...) as in the training
            data, or one string (taken as the title).
          encoder: the pretrained text encoder's directory; None uses the one the model was
            trained with when that is a local directory here (a checkpoint never makes this
            process download anything).
          cache_dir: where to cache the new items' embeddings; None: the default cache
            (`GRAPHREC_CACHE_DIR`), never a path taken from the checkpoint.

        Their representations come from text as a cold item's do. Only text fusions can do this.
        """
        from graphrec_jax.text.features import encode_records

        if self.config.model.fusion not in TEXT_FUSIONS:
            raise RequestError(
                f"this model (model.fusion={self.config.model.fusion!r}) represents items by their "
                "interactions only; train with a text fusion (text_only, concat, text_node_input) to add "
                "items from text"
            )
        item_ids, texts = list(item_ids), list(texts)
        if len(item_ids) != len(texts):
            raise RequestError(f"{len(item_ids)} item ids but {len(texts)} texts")
        known = [item for item in item_ids if item in self.item_map]
        if known or len(set(item_ids)) != len(item_ids):
            raise RequestError(f"item ids must be new and distinct; already known or repeated: {known[:5] or item_ids}")
        records = [{"title": text} if isinstance(text, str) else text for text in texts]
        fields = self.config.data.text.item_fields
        if all(isinstance(text, str) for text in texts):
            fields = "title"
        features = encode_records(
            records, fields, self._text_encoder(encoder), pooling=self.config.model.text.pooling, cache_dir=cache_dir
        )
        dataset = self.setup.dataset
        item_map = IdMap(self.item_map.kind, np.concatenate([self.item_map.raw_ids, np.asarray(item_ids, object)]))
        grown = Dataset(
            user_map=self.user_map, item_map=item_map, train=dataset.train, evaluation={}, name=dataset.name
        )
        text_features = np.concatenate([np.asarray(self.setup.text_features), features])
        self.setup = build_setup(self.config, grown, text_features=text_features)
        self.params = dict(self.params)
        if "node_embedding" in self.params:  # new nodes have no edges: their id part is zeroed anyway
            embedding = self.params["node_embedding"]
            self.params["node_embedding"] = jnp.concatenate(
                [embedding, jnp.zeros((len(item_ids), embedding.shape[1]), embedding.dtype)]
            )
        self.item_map = item_map
        if self.item_titles is not None:
            self.item_titles = list(self.item_titles) + [str(record.get("title", "")) for record in records]
        self._refresh_representations()

    def _text_encoder(self, directory: str | None = None):
        """The text encoder as trained: the pretrained tower with fine-tuned layers in place."""
        if getattr(self, "_encoder", None) is None or directory is not None:
            from graphrec_jax.text.features import load_text_encoder
            from graphrec_jax.text.finetune import TEXT_PARAMS, TextTower

            if directory is None:
                directory = self.config.model.text.encoder
                if not Path(str(directory)).expanduser().is_dir():
                    raise RequestError(
                        f"the model was trained with the text encoder {directory!r}, which is not a directory "
                        "on this machine; pass add_items(..., encoder=DIR) with that encoder's checkpoint directory"
                    )
            encoder = load_text_encoder(self.config.model.text, encoder=directory)
            if TEXT_PARAMS in self.params:
                text = self.config.model.text
                tower = TextTower(encoder.config, text.freeze_layers, text.pooling, text.dtype)
                encoder.params = tower.merge_params(encoder.params, self.params[TEXT_PARAMS])
            self._encoder = encoder
        return self._encoder

    def title(self, item_id: Any) -> str:
        """The item's title when the data had one, else its id as text."""
        if self.item_titles:
            index = int(self.item_map.to_index([item_id])[0])
            if self.item_titles[index]:
                return self.item_titles[index]
        return str(item_id)


def _restored_dataset(metadata: dict, arrays: dict) -> tuple:
    """The (validated) config and the serving dataset a checkpoint's metadata and arrays describe."""
    config = config_from_json(json.dumps(metadata["config"]))
    validate_config(config)
    user_map = IdMap.from_json(metadata["id_maps"]["user"])
    item_map = IdMap.from_json(metadata["id_maps"]["item"])
    users, items = np.asarray(arrays["train_users"]), np.asarray(arrays["train_items"])
    for name, values, size in (("train_users", users, len(user_map)), ("train_items", items, len(item_map))):
        if values.dtype.kind not in "iu" or (len(values) and not 0 <= values.min() <= values.max() < size):
            raise ValueError(f"{name} must be indices in [0, {size}) (the id map's size)")
    social = None
    if "social_users" in arrays:
        social = SocialLinks(np.asarray(arrays["social_users"]), np.asarray(arrays["social_friends"]))
        if len(social) and max(social.users.max(), social.friends.max()) >= len(user_map):
            raise ValueError(f"social links name users beyond the user map's {len(user_map)}")
    dataset = Dataset(
        user_map=user_map,
        item_map=item_map,
        train=Interactions(users, items),
        evaluation={},
        name=str(metadata.get("dataset", {}).get("name", "dataset")),
        social=social,
    )
    return config, dataset


def _check_restored(config, dataset: Dataset, params: dict, arrays: dict) -> None:
    """The parameters and arrays must fit the config and the id maps, or serving fails deep inside."""
    num_nodes = dataset.num_users + dataset.num_items
    embedding = params.get("node_embedding")
    expected = (num_nodes, config.model.embedding_dim)
    if config.model.fusion != "text_only" and (embedding is None or tuple(embedding.shape) != expected):
        shape = None if embedding is None else tuple(embedding.shape)
        raise ValueError(f"node_embedding has shape {shape}, the config and id maps need {expected}")
    if config.model.fusion in TEXT_FUSIONS:
        features = arrays.get("text_features")
        if features is None or np.shape(features)[0] != num_nodes:
            rows = None if features is None else np.shape(features)[0]
            raise ValueError(f"a text model needs text_features for its {num_nodes} nodes, found {rows} rows")


def _as_list(values) -> list:
    if isinstance(values, (str, bytes, int, np.integer)) or not isinstance(values, Sequence | np.ndarray | pd.Index):
        return [values]
    return list(values)
