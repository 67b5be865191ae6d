"""Checking transferability estimators against real fine-tuning.

:func:`validate_rankings` scores each candidate backbone with the estimators
(:func:`mtransfer.ranking.rank_models`), fine-tunes every candidate on the target with a short
budget, and reports, per estimator, Kendall's tau, Spearman's rho and whether its top choice is
the best fine-tuned model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mtransfer.atomic import atomic_write_json
from mtransfer.model import TransferModel
from mtransfer.plots import save_figure
from mtransfer.ranking.backbones import Candidate, check_estimators, correlate, rank_models
from mtransfer.training import Trainer, TrainingArguments


@dataclass
class ValidationReport:
    """Estimator scores, fine-tuned results and their agreement."""

    scores: dict[str, dict[str, float]]
    achieved: dict[str, float]
    metric: str
    agreement: dict[str, dict[str, Any]]

    def __repr__(self) -> str:
        return f"ValidationReport(metric={self.metric!r})\n{self.table()}"

    def table(self) -> str:
        estimators = sorted({e for row in self.scores.values() for e in row})
        width = max(10, *(len(n) for n in self.scores))
        lines = ["candidate".ljust(width) + "".join(e.rjust(11) for e in estimators) + self.metric.rjust(16)]
        for name, row in self.scores.items():
            lines.append(name.ljust(width) + "".join(f"{row.get(e, float('nan')):11.4f}" for e in estimators)
                         + f"{self.achieved[name]:16.4f}")
        lines.append("")
        lines.append("estimator   kendall_tau  spearman_rho  top1_hit")
        for e, a in self.agreement.items():
            lines.append(f"{e:<12}{a['kendall_tau']!s:>11}{a['spearman_rho']!s:>14}{a['top1_hit']!s:>10}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "scores": self.scores, "achieved": self.achieved, "agreement": self.agreement}

    def plot(self, path: str | os.PathLike) -> Path:
        """One scatter per estimator: score vs achieved metric, candidates labelled."""
        from matplotlib.figure import Figure  # no pyplot: never switches a notebook's backend

        estimators = list(self.agreement)
        fig = Figure(figsize=(3.6 * len(estimators), 3.2))
        axes = fig.subplots(1, len(estimators), squeeze=False)
        for ax, e in zip(axes[0], estimators):
            names = [n for n in self.scores if e in self.scores[n]]
            xs = [self.scores[n][e] for n in names]
            ys = [self.achieved[n] for n in names]
            ax.scatter(xs, ys)
            for n, x, y in zip(names, xs, ys):
                ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            a = self.agreement[e]
            ax.set_title(f"{e}: tau={a['kendall_tau']}", fontsize=9)
            ax.set_xlabel(f"{e} score")
            ax.set_ylabel(self.metric)
        fig.tight_layout()
        return save_figure(fig, path, dpi=120)


def validate_rankings(candidates: Sequence[Candidate], train: Any, evaluation: Any, *,
                      estimators: Sequence[str] = ("logme", "hscore", "knn"), training: Mapping[str, Any] | None = None,
                      metric: str = "eval_accuracy", output_dir: str | os.PathLike = "outputs/validate_rankings",
                      seed: int = 0) -> ValidationReport:
    """Score each candidate on ``train`` with the estimators, fine-tune it (short budget) and
    evaluate on ``evaluation``; report how well each estimator's ranking predicts the result.

    Args:
        candidates: Backbones to compare.
        train, evaluation: Labelled target data (the estimators read ``train`` only).
        estimators: Feature-based estimators to check.
        training: :class:`~mtransfer.training.TrainingArguments` settings for the fine-tuning runs
            (default: a 10-epoch frozen probe on cached features).
        metric: The achieved metric to rank by (``eval_accuracy``, ``eval_f1``, ``eval_r2``...).
        output_dir: Each candidate's run goes to ``output_dir/<name>``; the report to ``report.json``.
    """
    settings = {"strategy": "frozen", "num_epochs": 10, "learning_rate": 1e-2, "batch_size": 16, "report_to": [],
                "plot": False, "save_checkpoints": False, "progress_bar": False, "seed": seed}
    settings.update(training or {})
    scores = rank_models(candidates, train, estimators=estimators)
    achieved = {}
    out = Path(output_dir)
    for c in candidates:
        model = TransferModel.from_backbone(c.modality, c.name_or_path, labels=train.label_names, task=train.task,
                                            seed=seed, **c.adapter)
        trainer = Trainer(model, TrainingArguments(output_dir=str(out / c.name), **settings), train)
        trainer.train()
        achieved[c.name] = float(trainer.evaluate(evaluation)[metric])
    agreement = {e: correlate({n: s[e] for n, s in scores.items() if e in s}, achieved)
                 for e in check_estimators(estimators) if any(e in s for s in scores.values())}
    report = ValidationReport(scores, achieved, metric, agreement)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report.to_dict())
    report.plot(out / "agreement.png")
    return report

