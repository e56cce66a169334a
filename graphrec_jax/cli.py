"""What the scripts in `scripts/` do, as functions: train, evaluate, score.

Each prints for a person at a terminal; the Python API underneath is
`training.workdir.train_and_evaluate`, `serving.Recommender` and `serving.evaluation.evaluate_model`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphrec_jax import devices


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Orbax reports routine events (read-only opens, async saves) as absl warnings.
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_training(
    config,
    workdir: str,
    *,
    show_users: int = 3,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict:
    """Trains with `config` in `workdir`, prints the final metrics and a few users' top-10."""
    _setup_logging()
    devices.initialize_distributed(coordinator_address, num_processes, process_id)
    from graphrec_jax.training.workdir import train_and_evaluate

    metrics = train_and_evaluate(config, workdir)
    if not devices.is_primary_process():
        return metrics
    print(json.dumps({key: value for key, value in metrics.items() if not key.endswith("seconds")}))
    if show_users > 0:
        from graphrec_jax.serving.recommender import Recommender

        recommender = Recommender.from_checkpoint(workdir)
        print(format_recommendations(recommender, recommender.user_ids[:show_users], k=10))
    return metrics


def format_recommendations(recommender, user_ids: Sequence, k: int = 10) -> str:
    """A readable block of each user's top-`k` with item titles."""
    table = recommender.recommend(list(user_ids), k=k)
    lines = []
    for user_id, rows in table.groupby("user_id", sort=False):
        lines.append(f"Top {k} for user {user_id}:")
        for row in rows.itertuples():
            lines.append(f"  {row.rank:2d}. {recommender.title(row.item_id)}  [{row.item_id}]  score {row.score:.3f}")
    return "\n".join(lines)


def run_evaluation(workdir: str, *, which: str = "best", step: int | None = None) -> dict:
    """Restores a checkpoint, re-reads its dataset, evaluates every split; prints JSON last."""
    _setup_logging()
    from graphrec_jax.config import cutoffs
    from graphrec_jax.data.prepare import prepare_dataset
    from graphrec_jax.models.setup import build_setup
    from graphrec_jax.serving.evaluation import evaluate_model
    from graphrec_jax.serving.recommender import Recommender

    recommender = Recommender.from_checkpoint(workdir, which=which, step=step)
    config = recommender.config
    dataset = prepare_dataset(config.data)
    _check_same_data(dataset, recommender, workdir)
    setup = build_setup(config, dataset, text_features=recommender.setup.text_features)
    metrics = evaluate_model(
        setup,
        recommender.params,
        ks=cutoffs(config),
        chunk_size=config.eval.user_chunk_size,
        backend=config.model.aggregation,
        representations=np.concatenate([recommender.user_representations, recommender.item_representations]),
    )
    metrics = {"step": recommender.step, **metrics}
    print(json.dumps(metrics))
    return metrics


def _check_same_data(dataset, recommender, workdir: str) -> None:
    same = (
        dataset.num_users == len(recommender.user_map)
        and dataset.num_items == len(recommender.item_map)
        and len(dataset.train) == len(recommender.setup.dataset.train)
    )
    if not same:
        raise ValueError(
            f"the data at data.path={recommender.config.data.path!r} no longer matches the data the "
            f"model in {workdir} was trained on ({len(recommender.user_map)} users, "
            f"{len(recommender.item_map)} items, {len(recommender.setup.dataset.train)} training interactions)"
        )


def run_scoring(
    workdir: str,
    out: str,
    *,
    users: Sequence[str] | None,
    k: int = 10,
    exclude_seen: bool = True,
    which: str = "best",
) -> None:
    """Writes top-`k` recommendations for `users` (None: all users) to `out` (.csv or .json)."""
    _setup_logging()
    from graphrec_jax.serving.recommender import Recommender

    path = Path(out)
    if path.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out {out}: the file must end in .csv or .json")
    recommender = Recommender.from_checkpoint(workdir, which=which)
    if users is None:
        user_ids = recommender.user_ids
    else:
        user_ids = [_match_id(user, recommender.user_map) for user in users]
    table = recommender.recommend(user_ids, k=k, exclude_seen=exclude_seen)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        table.to_csv(path, index=False)
    else:
        payload = {
            str(user_id): [{"item_id": _plain(row.item_id), "score": row.score} for row in rows.itertuples()]
            for user_id, rows in table.groupby("user_id", sort=False)
        }
        path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {len(table)} recommendations for {len(user_ids)} users to {path}", file=sys.stderr)


def _match_id(text: str, id_map):
    """Command-line ids arrive as text; match an integer id when the map holds integers."""
    if text in id_map:
        return text
    try:
        number = int(text)
    except ValueError:
        return text
    return number if number in id_map else text


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
