"""Plots written next to a run's outputs (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mtransfer.atomic import atomic_write_bytes


def save_figure(fig: Any, path: str | Path, dpi: int | None = None) -> Path:
    """Write a matplotlib figure as a PNG, atomically (rendered in memory, then renamed into place)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_learning_curve(history: Sequence[dict[str, Any]], path: str | Path, metric: str | None = None) -> Path:
    """Training and evaluation loss per epoch, and ``metric`` on a second axis; phase changes marked.

    Returns the path of the PNG written (atomically).
    """
    from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot()
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
    return save_figure(fig, path)


def plot_confusion_matrix(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[str], path: str | Path,
                          normalize: bool = True) -> Path:
    """A confusion matrix (rows: true labels, columns: predictions), row-normalised by default, as a PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    index = {name: i for i, name in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for t, p in zip(y_true, y_pred):
        m[index[t], index[p]] += 1
    shown = m / np.clip(m.sum(1, keepdims=True), 1, None) if normalize else m
    size = 1.6 + 0.55 * len(labels)
    fig = Figure(figsize=(size + 1.2, size), dpi=110)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, m.max()))
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    ax.set_title(f"confusion matrix (accuracy {np.trace(m) / max(1, m.sum()):.3f})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
