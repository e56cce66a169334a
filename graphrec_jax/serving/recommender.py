"""Serving a trained model from Python: `Recommender.from_checkpoint(workdir)`.

The recommender restores the parameters, rebuilds the training graph from the
interactions saved with the checkpoint, computes every node's representation once, and
answers in raw ids. It never imports the training stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from graphrec_jax.checkpoint import CheckpointError, CheckpointStore, has_checkpoints
from graphrec_jax.config import ConfigError, config_from_json, validate_config
from graphrec_jax.data.prepare import CATEGORY_FIELDS, item_categories
from graphrec_jax.data.types import Dataset, IdMap, Interactions, SocialLinks, UnknownIdError
from graphrec_jax.files import file_in_the_way
from graphrec_jax.graph.sparse import graph_operator
from graphrec_jax.models.network import TEXT_FUSIONS
from graphrec_jax.models.setup import ModelSetup, build_setup
from graphrec_jax.serving import foldin
from graphrec_jax.serving.beyond_accuracy import labels_to_csr
from graphrec_jax.serving.diversity import METHODS, diversified_top_k, padded_labels, unit_rows
from graphrec_jax.serving.propagation import inference_operators, node_representations
from graphrec_jax.serving.ranking import csr_by_user, top_k_items

# What `Recommender.recommend(..., diversify_by=...)` can compare items by.
SIMILARITY_SOURCES = ("categories", "text", "representation")


class RequestError(ValueError):
    """Arguments a serving call cannot answer (a `k` that is not a positive integer, ...)."""


def check_flag(value, name: str) -> bool:
    """`value` as a bool; raises RequestError unless it is True or False (a string like "no" is not)."""
    if not isinstance(value, bool | np.bool_):
        raise RequestError(f"{name}={value!r} must be True or False")
    return bool(value)


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
        item_categories: Sequence[Sequence[str]] | None = None,
        item_texts: Sequence[dict] | None = None,
    ):
        self.config = config
        self.setup = setup
        self.params = params
        self.step = step
        self.user_map: IdMap = setup.dataset.user_map
        self.item_map: IdMap = setup.dataset.item_map
        self.item_titles = item_titles
        self.item_texts = None if item_texts is None else list(item_texts)  # text models: each item's fields
        # per item index its category or tag labels (`Dataset.item_categories`), or None
        self.item_categories = (
            None if item_categories is None else [tuple(map(str, labels)) for labels in item_categories]
        )
        self._train_by_user = csr_by_user(setup.dataset.train, setup.dataset.num_users)
        self._refresh_representations()

    @classmethod
    def from_checkpoint(cls, workdir: str | Path, *, step: int | None = None, which: str = "best") -> Recommender:
        """Restores a trained model from a training workdir.

        Args:
          workdir: the `--workdir` of a training run.
          step: a specific checkpoint step; None picks by `which`.
          which: "best" (highest validation metric; the latest when no checkpoint has one) or "latest";
            a checkpoint that does not restore is passed over for the others, latest first. A state
            written by `save` or `scripts/update.py` supersedes the checkpoints it grew from: when it is
            the latest, "best" restores it.
        """
        if which not in ("best", "latest"):
            raise RequestError(f"which={which!r} must be 'best' or 'latest'")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0):
            raise RequestError(f"step={step!r} must be a checkpoint step, a whole number >= 0 (or None)")
        workdir = _checked_workdir(workdir)
        store = CheckpointStore(workdir, read_only=True)
        first = None  # "best" tries the best step first, then the others latest first
        if step is None and which == "best" and not foldin.latest_is_dynamic(store):
            first = store.best_step()  # None when no checkpoint has the metric: the latest
        restored_step, state, arrays, metadata = store.restore(None, None, step=step, first=first)
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
        recommender = cls(
            config,
            setup,
            params,
            step=restored_step,
            item_titles=metadata.get("item_titles"),
            item_categories=metadata.get("item_categories"),  # absent from older checkpoints: None
            item_texts=metadata.get("item_text"),
        )
        recommender._restore_served(metadata, arrays, where)  # a `save`'s representations, fold-ins included
        return recommender

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
        self._sources = None  # the explanations' decomposition, computed on first use

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Sequence[Any] | None = None,
        diversity: float = 0.0,
        method: str = "mmr",
        pool: int | None = None,
        diversify_by: str = "auto",
        window: int | None = None,
    ) -> pd.DataFrame:
        """Top-`k` items per user, optionally re-ranked for diversity.

        Args:
          user_ids: raw user ids: a list, tuple, array, pandas Series or Index (in that order), or a
            single id; one block of rows per id given.
          k: list length per user.
          exclude_seen: leave out each user's training items.
          candidates: raw item ids to choose from (None: every item).
          diversity: in [0, 1]. 0 ranks by relevance alone, exactly as without re-ranking; above 0 each
            user's top-`pool` items (seen items and `candidates` applied) are re-ranked for relevance and
            diversity (`serving.diversity`); 1 weighs diversity alone (MMR) or relevance not at all (DPP).
          method: "mmr" (maximal marginal relevance) or "dpp" (fast greedy MAP of a determinantal point
            process, Chen et al. 2018).
          pool: items re-ranked per user, at least `k` (None: max(4 k, 50)); capped at the candidates.
          diversify_by: what makes two items similar: "categories" (Jaccard of their category or tag sets),
            "text" (cosine of the model's text features), "representation" (cosine of the item
            representations), or "auto": the first of those the model has, in that order.
          window: DPP only: each pick is compared with the previous `window - 1` picks (for long lists).

        Returns:
          A DataFrame with columns user_id, rank (1-based), item_id, score; users with fewer
          than `k` candidates get fewer rows. Raises UnknownIdError for an unknown id and
          RequestError for a bad option. Scores are the model's relevance scores: after re-ranking
          they need not decrease with rank.
        """
        user_ids = _as_list(user_ids)
        k = check_k(k)
        exclude_seen = check_flag(exclude_seen, "exclude_seen")
        diversity, source = self._check_diversity(diversity, method, pool, diversify_by, window, k)
        columns = ["user_id", "rank", "item_id", "score"]
        if not user_ids:
            return pd.DataFrame({column: [] for column in columns})
        users = self.user_map.to_index(user_ids, source="user_ids")
        candidate_items = None
        if candidates is not None:
            candidate_items = np.unique(self.item_map.to_index(_as_list(candidates), source="candidates"))
        k_eff = min(k, self.item_map.__len__())
        ranking = dict(
            exclude=self._train_by_user if exclude_seen else None,
            candidate_items=candidate_items,
            user_chunk_size=min(self.config.eval.user_chunk_size, max(len(users), 1)),
            backend=self.config.model.aggregation,
        )
        if diversity == 0:
            items, scores = top_k_items(self.user_representations, self.item_representations, users, k_eff, **ranking)
        else:
            features, kind = self._similarity_features(source)
            num_candidates = len(self.item_map) if candidate_items is None else len(candidate_items)
            items, scores = diversified_top_k(
                self.user_representations,
                self.item_representations,
                users,
                k_eff,
                item_features=features,
                kind=kind,
                diversity=diversity,
                method=method,
                pool=min(max(4 * k, 50) if pool is None else pool, num_candidates),
                window=window,
                **ranking,
            )
        return self._ranked_table(user_ids, items, scores, columns)

    def _check_diversity(self, diversity, method, pool, diversify_by, window, k: int) -> tuple[float, str]:
        """The re-ranking options of `recommend`, checked: (diversity as a float, the similarity source)."""
        if isinstance(diversity, bool) or not isinstance(diversity, int | float | np.integer | np.floating):
            raise RequestError(f"diversity={diversity!r} must be a number in [0, 1]")
        if not 0.0 <= float(diversity) <= 1.0:
            raise RequestError(f"diversity={diversity!r} must lie in [0, 1] (0: relevance only)")
        if method not in METHODS:
            raise RequestError(f"method={method!r} must be one of {', '.join(map(repr, METHODS))}")
        if pool is not None and check_k(pool, "pool") < k:
            raise RequestError(f"pool={pool} must be at least k={k}: the k items are chosen from the pool")
        if window is not None:
            check_k(window, "window")
            if method != "dpp":
                raise RequestError(f"window={window} applies to method='dpp' only, not method={method!r}")
        sources = self._similarity_sources()
        if diversify_by == "auto":
            return float(diversity), sources[0]
        if diversify_by not in SIMILARITY_SOURCES:
            choices = ", ".join(map(repr, ("auto", *SIMILARITY_SOURCES)))
            raise RequestError(f"diversify_by={diversify_by!r} must be one of {choices}")
        if diversify_by not in sources:
            lacking = {"categories": "item categories or tags in its data", "text": "text features"}[diversify_by]
            raise RequestError(
                f"diversify_by={diversify_by!r}: this model has no {lacking}; available: "
                + ", ".join(map(repr, ("auto", *sources)))
            )
        return float(diversity), diversify_by

    def _similarity_sources(self) -> list[str]:
        """The item similarities this model can re-rank by, in the order "auto" prefers them."""
        sources = []
        if self.item_categories is not None and any(self.item_categories):
            sources.append("categories")
        if self.setup.text_features is not None:
            sources.append("text")
        return [*sources, "representation"]

    def _similarity_features(self, source: str) -> tuple[np.ndarray, str]:
        """(`[num_items, f]` item features, `rerank` kind) for a similarity source."""
        num_items = len(self.item_map)
        if source == "categories":
            cached = getattr(self, "_category_labels", None)
            if cached is None or cached.shape[0] != num_items:
                cached = padded_labels(labels_to_csr(self.item_categories, num_items))
                self._category_labels = cached
            return cached, "jaccard_labels"
        if source == "text":
            return self._unit_item_rows(source, self.setup.text_features, self.setup.dataset.num_users), "cosine"
        return self._unit_item_rows(source, self.item_representations, 0), "cosine"

    def _unit_item_rows(self, source: str, values, first_item: int) -> np.ndarray:
        """`values[first_item:]` scaled to unit rows, kept per source until `values` is replaced
        (adding items, folding in users or restoring builds new arrays), so repeated requests
        skip the pass over the catalogue."""
        cache = self.__dict__.setdefault("_unit_rows_cache", {})
        cached = cache.get(source)
        if cached is None or cached[0] is not values:
            cached = cache[source] = (values, unit_rows(np.asarray(values)[first_item:]))
        return cached[1]

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

        Their representations come from text as a cold item's do. Only text fusions can do this,
        and a graph-only model with semantic edges (`model.text.semantic_k > 0`), whose new items
        are represented by what their textual neighbours bring. With semantic edges the kNN graph
        is rebuilt over the grown catalogue (`models.setup.build_setup`), not extended: it is a
        function of every item's features (a new item can enter an old item's top-k, and every
        degree it touches renormalises), so the rebuilt graph is the one training on the grown
        catalogue would build; it costs one chunked `[n, n]` similarity pass.
        """
        from graphrec_jax.text.features import encode_records

        linked = self.config.model.text.semantic_k > 0 and self.setup.text_features is not None
        if self.config.model.fusion not in TEXT_FUSIONS and not linked:
            raise RequestError(
                f"this model (model.fusion={self.config.model.fusion!r}) represents items by their "
                "interactions only; train with a text fusion (text_only, concat, text_node_input), or with "
                "semantic edges (model.text.semantic_k > 0), to add items from text"
            )
        item_ids, texts = _as_list(item_ids), [texts] if isinstance(texts, str | dict) else list(texts)
        foldin.check_ids(item_ids, self.item_map, where="item_ids entry")
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
        if self.item_texts is not None:
            self.item_texts = self.item_texts + [dict(record) for record in records]
        if self.item_categories is not None:  # labelled as the training data's items are
            fields = self.config.data.text.get("category_fields", CATEGORY_FIELDS)
            labels = item_categories([{k: str(v) for k, v in r.items()} for r in records], fields)
            self.item_categories = self.item_categories + (labels or [()] * len(records))
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

    def explain(self, user_id: Any, item_id: Any, k: int = 5, *, fields: bool = False, encoder=None) -> pd.DataFrame:
        """Why `item_id` scores as it does for `user_id`: the user's history items (and friends,
        in a social model) that contribute most to the score, each with its share, and the rest.

        The shares are an exact decomposition of the model's score over the user's neighbours
        (`serving.explain`): the rows of kind "item" and "friend", the "own" row (the user's own
        embedding's share) and the "remainder" row (the other neighbours, a head's text term)
        sum to the score. With a
        text model, a "text" row gives the text inputs' share (informative: it overlaps the
        others), and `fields=True` adds one row per text field: how much the score falls when the
        item is re-encoded without that field (needs the text encoder, see `add_items`).

        Returns:
          a DataFrame with columns user_id, item_id, score, kind, evidence_id, title, contribution.
        Raises UnknownIdError, RequestError for a model that is not linear in its inputs.
        """
        for name, value in (("user_id", user_id), ("item_id", item_id)):
            if not _is_one_id(value):
                raise RequestError(
                    f"explain takes one {name}, got a {type(value).__name__}: use explain_pairs(user_ids, item_ids) "
                    "for many pairs, or explain_recommendations(user_id) for one user's list"
                )
        return self.explain_pairs([user_id], [item_id], k=k, fields=fields, encoder=encoder)

    def explain_pairs(
        self, user_ids: Sequence[Any], item_ids: Sequence[Any], k: int = 5, *, fields: bool = False, encoder=None
    ) -> pd.DataFrame:
        """`explain` for many (user, item) pairs at once (one decomposition, vectorised)."""
        from graphrec_jax.serving import explain

        user_ids, item_ids = _as_list(user_ids), _as_list(item_ids)
        if len(user_ids) != len(item_ids):
            raise RequestError(f"{len(user_ids)} user ids but {len(item_ids)} item ids: pass one of each per pair")
        k = check_k(k)
        users = self.user_map.to_index(user_ids, source="user_ids")
        items = self.item_map.to_index(item_ids, source="item_ids")
        if self._sources is None:
            try:
                self._sources = explain.compute_sources(
                    self.setup.model,
                    self.params,
                    self.setup.graph,
                    self.setup.text_features,
                    backend=self.config.model.aggregation,
                )
            except explain.NotExplainableError as error:
                raise RequestError(str(error)) from None
        found = explain.explain_pairs(self._sources, users, items, self.setup.num_users, k)
        rows = []
        for pair, (user_id, item_id) in enumerate(zip(user_ids, item_ids, strict=True)):
            score = float(found.score[pair])
            for neighbour, kind, share in zip(
                found.neighbours[pair], found.kinds[pair], found.contributions[pair], strict=True
            ):
                if neighbour < 0:
                    break
                name = explain.neighbour_kind_name(kind)
                if name == "friend":
                    evidence, title = self.user_map.raw_ids[neighbour], str(self.user_map.raw_ids[neighbour])
                else:
                    evidence = self.item_map.raw_ids[neighbour - self.setup.num_users]
                    title = self.title(evidence)
                rows.append((user_id, item_id, score, name, evidence, title, float(share)))
            rows.append((user_id, item_id, score, "own", None, "", float(found.own[pair])))
            rest = float(found.remainder[pair] - found.own[pair])
            rows.append((user_id, item_id, score, "remainder", None, "", rest))
            if found.text is not None:
                rows.append((user_id, item_id, score, "text", None, "", float(found.text[pair])))
            if fields:
                for field, share in self._field_shares(int(users[pair]), int(items[pair]), encoder).items():
                    rows.append((user_id, item_id, score, "field", field, field, float(share)))
        columns = ["user_id", "item_id", "score", "kind", "evidence_id", "title", "contribution"]
        return pd.DataFrame(rows, columns=columns)

    def explain_recommendations(self, user_id: Any, k: int = 10, *, evidence: int = 5) -> pd.DataFrame:
        """Explains `user_id`'s top-`k` recommendations in one call: `explain` for each, with a
        `rank` column."""
        if not _is_one_id(user_id):
            raise RequestError(
                f"explain_recommendations takes one user_id, got a {type(user_id).__name__}: call it once per user"
            )
        top = self.recommend([user_id], k=k)
        table = self.explain_pairs([user_id] * len(top), top.item_id.tolist(), k=evidence)
        ranks = dict(zip(top.item_id.tolist(), top["rank"].tolist(), strict=True))
        table.insert(2, "rank", [ranks[item] for item in table.item_id])
        return table

    def _field_shares(self, user: int, item: int, encoder) -> dict[str, float]:
        """Each text field's leave-one-out share of a pair's score (see `explain`)."""
        from graphrec_jax.serving.explain import field_shares
        from graphrec_jax.text.features import encode_records
        from graphrec_jax.text.item_text import parse_fields

        if self.setup.text_features is None or self.item_texts is None:
            raise RequestError("field shares need a text model whose checkpoint holds its items' text")
        record = dict(self.item_texts[item] or {})
        names = [name for name in parse_fields(self.config.data.text.item_fields) if record.get(name)]
        if not names:
            return {}
        without = [{key: value for key, value in record.items() if key != name} for name in names]
        features = encode_records(
            without,
            self.config.data.text.item_fields,
            self._text_encoder(encoder),
            pooling=self.config.model.text.pooling,
        )
        shares = field_shares(
            self.setup.model, self.params, self.setup.graph, self.setup.text_features, user, item, features
        )
        return dict(zip(names, shares.tolist(), strict=True))

    # Dynamic updates: new users and interactions served without retraining (`serving.foldin`).

    @property
    def setup(self) -> ModelSetup:
        """The dataset, graph, model and text features served. After `add_interactions` the grown
        graph is built on first use, so that a stream of fold-ins does not rebuild it each time."""
        pending = self.__dict__.get("_pending_setup")
        if pending is not None:
            dataset, text_features = pending
            self.__dict__["_pending_setup"] = None
            self.__dict__["_setup"] = build_setup(self.config, dataset, text_features=text_features)
        return self.__dict__["_setup"]

    @setup.setter
    def setup(self, value: ModelSetup) -> None:
        self.__dict__["_setup"], self.__dict__["_pending_setup"] = value, None

    @property
    def _sources(self):
        """The explanations' decomposition (`explain.Sources`) of the served state, or None until
        `explain_pairs` computes it; after fold-ins, the fold-in state over the grown graph."""
        sources = self.__dict__.get("_explain_sources")
        state = self.__dict__.get("_foldin")
        if sources is None and state is not None and state.changed:
            representations = np.concatenate(
                [np.asarray(self.user_representations), np.asarray(self.item_representations)]
            )
            sources = state.sources(np.asarray(self.params["node_embedding"]), representations, self.setup.graph)
            self.__dict__["_explain_sources"] = sources
        return sources

    @_sources.setter
    def _sources(self, value) -> None:
        self.__dict__["_explain_sources"] = value
        if value is None:  # the representations were propagated again: a fold-in state follows them
            self.__dict__["_foldin"] = None

    def add_interactions(
        self, table, *, user_column: str = "user_id", item_column: str = "item_id", method: str | None = None
    ) -> dict[str, int]:
        """Adds interactions in raw ids, for known or new users and known items, without retraining.

        Args:
          table: a DataFrame with columns `user_column` and `item_column` (others, such as rating
            and timestamp, are ignored), or a list of (user, item) pairs.
          method: a new user's own embedding in LightGCN: "solve" (BPR steps on it alone, everything
            else fixed) or "propagate" (zero: its items' shares alone); None: `foldin.DEFAULT_METHOD`,
            which ranked best on ml-100k's held-out users (docs/BENCHMARKS.md, "Dynamic").

        New users join the user map after the known ones; pairs already known, or repeated in the
        call, are ignored (counted as "known_interactions"). The graph grows, the trained parameters
        stay. LightGCN folds each user with new interactions in from
        its new row of the graph, every other representation unchanged (`serving.foldin`: microseconds
        a user; `refresh()` propagates the grown graph exactly); other models propagate the grown
        graph again (exact, slower). Afterwards `recommend`, `score`, `explain`, `similar_users`,
        `similar_items` and `save` serve the new state.

        Returns counts {"new_users", "new_interactions", "known_interactions"}. Raises UnknownIdError
        for an unknown item (add it first with `add_items`), DataError for a malformed table or a user
        id that is not one (empty, NaN, a list; a number where the model's ids are strings, or the
        reverse: "196" is not user 196).
        """
        method = self._fold_in_method(method)
        raw_users, raw_items = foldin.read_pairs(table, user_column, item_column)
        foldin.check_ids(raw_users, self.user_map)
        items = self._known_items(raw_items, "interactions")
        new_ids = [user for user in dict.fromkeys(raw_users) if user not in self.user_map]
        user_map = foldin.grown_id_map(self.user_map, new_ids)
        users = user_map.to_index(raw_users).astype(np.int64)
        keep = foldin.new_pairs(self._train_by_user, users, items)
        users, items = users[keep], items[keep]
        counts = {"new_users": len(new_ids), "new_interactions": len(users), "known_interactions": int(np.sum(~keep))}
        if not len(users):
            return counts
        local = foldin.supports_local(self.config.model.name, self.config.model.fusion)
        state = self._fold_in_state() if local else None  # of the graph before it grows
        old_users = len(self.user_map)
        dataset, text_features = self.__dict__.get("_pending_setup") or (self.setup.dataset, self.setup.text_features)
        dataset = foldin.grown_dataset(dataset, user_map, users, items)
        profiles = not self.config.data.text.user_fields
        text_features = foldin.grown_text_features(text_features, dataset, len(new_ids), profiles)
        self.params = dict(self.params)
        if "node_embedding" in self.params:  # host arrays: a device op would compile for every new shape
            embedding = np.asarray(self.params["node_embedding"])
            self.params["node_embedding"] = foldin.insert_rows(
                embedding, old_users, np.zeros((len(new_ids), embedding.shape[1]))
            )
        self.user_map = user_map
        self._train_by_user = foldin.csr_with(self._train_by_user, len(user_map), users, items)
        if not local:
            self.setup = build_setup(self.config, dataset, text_features=text_features)
            self._refresh_representations()
            return counts
        self.__dict__["_pending_setup"] = (dataset, text_features)
        self.__dict__["_explain_sources"] = None
        state.add_users(np.zeros((len(new_ids), state.partial.shape[1]), np.float32))
        state.item_degree += np.bincount(items, minlength=len(state.item_degree))
        touched = np.unique(users)
        offsets, entries = foldin.rows_of(self._train_by_user[0], touched)
        history = self._train_by_user[1][entries]
        context = state.neighbour_sum(offsets, history, touched)
        new = np.flatnonzero(touched >= old_users)
        if method == "solve" and len(new):
            new_offsets, new_entries = foldin.rows_of(offsets, new)
            solved = self._solve_own(context[new], new_offsets, history[new_entries], state.scale)
            self.params["node_embedding"] = foldin.set_rows(self.params["node_embedding"], touched[new], solved)
            state.partial[touched[new]] = solved * np.float32(state.scale)
        own = self.params["node_embedding"][touched] * np.float32(state.scale)
        representations = foldin.insert_rows(
            np.asarray(self.user_representations), old_users, np.zeros((len(new_ids), context.shape[1]), np.float32)
        )
        self.user_representations = foldin.set_rows(representations, touched, own + context)
        state.changed = True
        return counts

    def recommend_for_history(
        self, item_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True, method: str | None = None
    ) -> pd.DataFrame:
        """Top-`k` items for an anonymous visitor from the items they interacted with (raw ids): the
        fold-in `add_interactions` gives a new user with this history (`method` as there), nothing kept.

        Returns a DataFrame with columns rank (1-based), item_id, score; `exclude_seen` leaves out
        the history. Raises UnknownIdError for an unknown item, RequestError for an empty history.
        """
        k = check_k(k)
        method = self._fold_in_method(method)
        items = np.unique(self._known_items(_as_list(item_ids), "item_ids"))
        if not len(items):
            raise RequestError("recommend_for_history needs at least one item id in the history")
        history = (np.array([0, len(items)], np.int64), items.astype(np.int32))
        if foldin.supports_local(self.config.model.name, self.config.model.fusion):
            state = self._fold_in_state()
            context = state.neighbour_sum(history[0], items, None, transient=True)
            own = self._solve_own(context, *history, state.scale) if method == "solve" else np.zeros_like(context)
            user, item_representations = own * np.float32(state.scale) + context, self.item_representations
        else:
            user, item_representations = self._propagated_history(items)
        top, scores = top_k_items(
            user,
            item_representations,
            np.zeros(1, np.int64),
            min(k, len(self.item_map)),
            exclude=history if exclude_seen else None,
            user_chunk_size=1,
            backend=self.config.model.aggregation,
        )
        table = self._ranked_table([None], top, scores, ["user_id", "rank", "item_id", "score"])
        return table.drop(columns="user_id")

    def refresh(self) -> None:
        """Propagates the current graph again with the current parameters: every representation
        exact for the grown graph, as a restart from a `save` would not be (it restores what was served)."""
        self._refresh_representations()

    def save(self, workdir: str | Path) -> int:
        """Writes the served state as a new checkpoint step of `workdir` and returns the step.

        The step follows the workdir's latest (the model's own step in an empty or new workdir; nothing
        on disk is changed). It holds the parameters (grown tables included), the grown training
        interactions, id maps and metadata as training writes them, and the served representations,
        which `from_checkpoint` restores as they are: the same recommendations as this object's.
        `scripts/update.py` trains on from it; `scripts/train.py` refuses to resume it (its data grew).
        """
        from graphrec_jax.config import config_to_json

        if not isinstance(workdir, str | Path) or not str(workdir):
            raise RequestError(f"workdir={workdir!r} must be a directory path")
        blocked = file_in_the_way(workdir)
        if blocked is not None:
            where = f"workdir {workdir}" if blocked == Path(workdir) else f"workdir {workdir}: {blocked}"
            raise RequestError(f"{where} is a file; pass a directory (new or a training run's)")
        setup = self.setup
        dataset = setup.dataset
        source = dict(getattr(self, "_checkpoint_metadata", None) or {})
        store = CheckpointStore(
            workdir, keep=self.config.train.keep_checkpoints, best_metric=source.get("best_metric", "")
        )
        try:
            step = max(store.steps(), default=self.step - 1) + 1
            arrays = {
                "train_users": dataset.train.users,
                "train_items": dataset.train.items,
                "user_representations": np.asarray(self.user_representations, np.float32),
                "item_representations": np.asarray(self.item_representations, np.float32),
            }
            if dataset.social is not None:
                arrays["social_users"], arrays["social_friends"] = dataset.social.users, dataset.social.friends
            if setup.text_features is not None:
                arrays["text_features"] = np.asarray(setup.text_features)
            state = self.__dict__.get("_foldin")
            if state is not None and state.changed:
                arrays["foldin_partial"] = state.partial
            metadata = {
                key: value for key, value in source.items() if key not in ("metrics", "step", "served_representations")
            }
            metadata.update(
                item_titles=self.item_titles,
                item_categories=None if self.item_categories is None else [list(c) for c in self.item_categories],
                item_text=self.item_texts,
                config=json.loads(config_to_json(self.config)),
                id_maps={"user": self.user_map.to_json(), "item": self.item_map.to_json()},
                dataset={
                    "name": dataset.name,
                    "num_users": dataset.num_users,
                    "num_items": dataset.num_items,
                    "num_train": len(dataset.train),
                },
                step=step,
                served_representations=True,
                dynamic={"kind": "served", "from_step": self.step},
            )
            metadata.setdefault("best_metric", "")
            metadata.setdefault("evaluation", {})
            params = jax.tree.map(np.asarray, self.params)
            store.save(step, {"train_state": {"step": np.asarray(step, np.int32), "params": params}}, arrays, metadata)
        finally:
            store.close()
        self.step = step
        self._checkpoint_metadata = metadata
        return step

    def _restore_served(self, metadata: dict, arrays: dict, where: Path) -> None:
        """After `from_checkpoint`: keeps the metadata a `save` extends and, for a checkpoint `save`
        wrote, restores the representations it served (and its fold-in state) instead of propagating."""
        self._checkpoint_metadata = metadata
        if not metadata.get("served_representations"):
            return
        users, items = arrays.get("user_representations"), arrays.get("item_representations")
        width = self.config.model.embedding_dim
        if np.shape(users) != (len(self.user_map), width) or np.shape(items) != (len(self.item_map), width):
            raise CheckpointError(
                f"checkpoint {where} says it holds served representations, but they have shapes "
                f"{np.shape(users)} and {np.shape(items)}, not ({len(self.user_map)}, {width}) and "
                f"({len(self.item_map)}, {width}): restore another step"
            )
        self.user_representations, self.item_representations = jnp.asarray(users), jnp.asarray(items)
        if "foldin_partial" in arrays:
            graph = self.setup.graph
            state = foldin.FoldInState.from_operator(
                np.asarray(arrays["foldin_partial"]),
                graph_operator(graph),
                self.setup.num_users,
                self.config.model.num_layers,
            )
            state.changed = True
            self.__dict__["_foldin"] = state

    def _fold_in_method(self, method: str | None) -> str:
        explicit = method is not None
        method = foldin.DEFAULT_METHOD if method is None else method
        if method not in foldin.METHODS:
            raise RequestError(f"method={method!r} must be one of {', '.join(map(repr, foldin.METHODS))}")
        if (
            explicit
            and method == "solve"
            and not foldin.supports_local(self.config.model.name, self.config.model.fusion)
        ):
            raise RequestError(
                f"method='solve' fits a new user's own embedding in LightGCN on id embeddings; this model "
                f"(model.name={self.config.model.name!r}, fusion={self.config.model.fusion!r}) propagates the grown "
                "graph from a zero embedding instead: leave method unset or pass 'propagate'"
            )
        return method

    def _known_items(self, raw_items: list, source: str) -> np.ndarray:
        """`[n]` int64 indices of known items; an unknown one raises UnknownIdError naming `add_items`."""
        try:
            return self.item_map.to_index(raw_items, source=source).astype(np.int64)
        except UnknownIdError as error:
            raise UnknownIdError(
                f"{error}; interactions can only name known items: add new items first with `add_items`"
            ) from None

    def _fold_in_state(self) -> foldin.FoldInState:
        """LightGCN's fold-in state of the served model (from its explanation sources, computed once)."""
        state = self.__dict__.get("_foldin")
        if state is None:
            from graphrec_jax.serving import explain

            sources = self._sources
            if sources is None:
                setup = self.setup
                sources = explain.compute_sources(
                    setup.model, self.params, setup.graph, setup.text_features, backend=self.config.model.aggregation
                )
                self._sources = sources
            state = foldin.FoldInState.from_sources(sources, len(self.user_map), self.config.model.num_layers)
            self.__dict__["_foldin"] = state
        return state

    def _solve_own(self, context: np.ndarray, offsets: np.ndarray, items: np.ndarray, scale: float) -> np.ndarray:
        """New users' layer-0 embeddings by `foldin.solve_embeddings` against the served items."""
        return foldin.solve_embeddings(
            context,
            offsets,
            items,
            self.item_representations,
            scale=scale,
            l2_weight=self.config.train.l2_weight,
            seed=self.config.seed,
        )

    def _propagated_history(self, items: np.ndarray) -> tuple[np.ndarray, Any]:
        """(`[1, d]` representation of a transient user with history `items`, `[num_items, d]` item
        representations) by propagating the graph grown by that user: models without local fold-in."""
        setup, user = self.setup, len(self.user_map)
        dataset = foldin.grown_dataset(
            setup.dataset, foldin.grown_id_map(self.user_map, [object()]), np.full(len(items), user), items
        )
        profiles = not self.config.data.text.user_fields
        text_features = foldin.grown_text_features(setup.text_features, dataset, 1, profiles)
        grown = build_setup(self.config, dataset, text_features=text_features)
        params = dict(self.params)
        if "node_embedding" in params:
            embedding = params["node_embedding"]
            params["node_embedding"] = foldin.insert_rows(embedding, user, np.zeros((1, embedding.shape[1])))
        values = node_representations(
            grown.model,
            params,
            grown.graph,
            grown.text_features,
            operators=inference_operators(self.config, grown),
            chunk_rows=self.config.sampling.inference_chunk_rows,
            backend=self.config.model.aggregation,
        )
        return np.asarray(values[user : user + 1]), values[user + 1 :]

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


def _is_one_id(value) -> bool:
    """Whether `value` is a single raw id (a string or an integer) rather than a collection of them."""
    return isinstance(value, str | bytes | int | np.integer)


def _as_list(values) -> list:
    """Ids as a list: one id, or a list, tuple, array, pandas Series or Index, or any other
    iterable of them; a set or a mapping is refused (its order is not the caller's)."""
    if _is_one_id(values):
        return [values]
    if isinstance(values, (set, frozenset, Mapping)):
        raise RequestError(
            f"ids given as a {type(values).__name__} have no order; pass a list (sorted(...) or list(...))"
        )
    if isinstance(values, np.ndarray | pd.Series | pd.Index):
        if values.ndim > 1:
            raise RequestError(f"ids must be one-dimensional, got an array of shape {values.shape}")
        return values.tolist() if values.ndim else [values.item()]
    if isinstance(values, Iterable):
        return list(values)
    return [values]


def _checked_workdir(workdir) -> Path:
    """`workdir` as a Path holding checkpoints, or a CheckpointError/RequestError that names the fix."""
    if not isinstance(workdir, str | Path) or not str(workdir):
        raise RequestError(f"workdir={workdir!r} must be the path of a training run's --workdir")
    workdir = Path(workdir)
    if has_checkpoints(workdir):
        return workdir
    # The checkpoint folder itself, or one step of it, passed instead of the run's workdir.
    for inner, run in ((workdir, workdir.parent), (workdir.parent, workdir.parent.parent)):
        if inner.name == "checkpoints" and has_checkpoints(run):
            raise CheckpointError(f"{workdir} is inside a run's checkpoint folder; pass the run's workdir, {run}")
    raise CheckpointError(
        f"no checkpoints in {workdir.resolve()}: train first with "
        f"`python scripts/train.py --config configs/demo.py --workdir {workdir}`"
    )
