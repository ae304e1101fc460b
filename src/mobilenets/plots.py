"""matplotlib figures. Imported lazily (matplotlib is optional at import time of the package).

`plot_training_curves`: loss (train and val) and val top-1 / top-5 against epoch, from metrics.jsonl rows.
"""

from __future__ import annotations

import os
from pathlib import Path


def plot_training_curves(rows: list[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Two panels: loss vs epoch (train, val), accuracy vs epoch (train top-1, val top-1, val top-5). PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_open

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in rows], "o-", label="train top-1")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in rows], "s-", label="val top-1")
    ax_acc.plot(epochs, [100 * r["val_top5"] for r in rows], "^--", label="val top-5")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path
