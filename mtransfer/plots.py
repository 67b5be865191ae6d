"""Plots written next to a run's outputs (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mtransfer.atomic import atomic_write_bytes


def plot_learning_curve(history: Sequence[dict[str, Any]], path: str | Path, metric: str | None = None) -> Path:
    """Training and evaluation loss per epoch, and ``metric`` on a second axis; phase changes marked.

    Returns the path of the PNG written (atomically).
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    if all("eval_loss" in r for r in history):
        ax.plot(epochs, [r["eval_loss"] for r in history], "s-", label="eval loss")
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if metric and metric != "eval_loss" and all(metric in r for r in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [r[metric] for r in history], "^-", color="tab:green", label=metric)
        ax2.set_ylabel(metric)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    for prev, cur in zip(history, history[1:]):
        if prev.get("phase") != cur.get("phase"):
            ax.axvline(prev["epoch"] + 0.5, color="grey", linestyle=":", linewidth=1)
            ax.text(prev["epoch"] + 0.55, ax.get_ylim()[1], cur.get("phase", ""), fontsize=7, va="top", color="grey")
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title("learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
