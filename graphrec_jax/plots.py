"""Training curves from `metrics.jsonl` as a PNG (loss and Recall@K against epochs)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_curves(metrics_path: str | Path, output_path: str | Path, *, k: int = 20) -> Path:
    """Draws loss and every split's recall@k against epoch; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics_path} holds no evaluation records to plot")
    epochs = [record["epoch"] for record in records]
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(10, 4))
    losses = [record.get("loss") for record in records]
    loss_axis.plot(epochs, [value if value is not None else float("nan") for value in losses], marker="o")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    loss_axis.set_title("loss")
    for key in sorted({key for record in records for key in record if key.endswith(f"/recall@{k}")}):
        recall_axis.plot(epochs, [record.get(key, float("nan")) for record in records], marker="o", label=key)
    recall_axis.set_xlabel("epoch")
    recall_axis.set_ylabel(f"Recall@{k}")
    recall_axis.set_title(f"Recall@{k}")
    recall_axis.legend()
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)
    return output_path
