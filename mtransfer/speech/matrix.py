"""The cross-lingual transfer matrix: pretrain on each source language, adapt to each target, measure.

The experiment of the lecture notes (shared/seeds/004): a CTC model is trained on each source
language with the *large* budget, then adapted to each target language with the *small* budget
(its encoder as trained, a new head with the rows of shared units copied); each target is also
trained from random initialisation with the small budget (the no-pretraining row, with its own
longer patience so it leaves the all-blank plateau) and, when asked, with the large budget (the
ceiling). Every run selects its checkpoint on validation speakers and is scored on test speakers
it never heard; every cell is repeated over seeds (the seed draws the small target subset and
initialises the model, so a transfer cell pairs a source model and a target subset of the same
seed).

Each finished run is written at once (``cells/<kind>/<name>/seed<k>.json``), so an interrupted
matrix resumes where it stopped and a finished one is only read. :class:`TransferMatrix` holds
the results: the target x source table (mean ± spread), the CER reduction over random
initialisation, a heatmap, a JSON of every run, and :meth:`TransferMatrix.check_ranker`, which
compares any source ranking (the language-ID scorer's posteriors, typological distances...)
with the measured reductions through :func:`mtransfer.ranking.validate.correlate`.

>>> settings = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0,))  # doctest: +SKIP
>>> matrix = run_transfer_matrix(settings, "outputs/matrix")  # doctest: +SKIP
>>> print(matrix.table())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

KINDS = ("source", "scratch", "transfer", "ceiling")
SCRATCH, CEILING = "random init", "large budget"


@dataclass
class MatrixSettings:
    """What the matrix runs; validated at construction.

    Args:
        sources / targets: espeak-ng languages (gettext catalog codes). A language may be both:
            its own transfer cell is then left out (the ceiling covers it).
        seeds: One run per seed in every cell (at least one; two or more give a spread).
        units: ``characters`` (each language's own characters; rows of shared characters copied)
            or ``phones`` (espeak-ng IPA phones: one inventory across languages).
        model: The encoder every run starts from (random init presets: ``builtin:w2v-bert-small``).
        source_utterances / target_utterances: The large and the small budget (training utterances).
        *_epochs, *_lr: Epoch limits and peak learning rates of the source, transfer, random-init
            (scratch) and ceiling runs; each stops after ``patience`` (``scratch_patience``)
            epochs without a better validation CER and keeps its best epoch.
        ceiling: Also train each target with the large budget.
    """

    sources: Sequence[str] = ("bn", "hi", "tr", "ru", "de", "es")
    targets: Sequence[str] = ("as", "mr", "ne", "it", "pt")
    seeds: Sequence[int] = (0, 1)
    units: str = "characters"
    model: str = "builtin:w2v-bert-small"
    source_utterances: int = 300
    target_utterances: int = 30
    source_epochs: int = 40
    target_epochs: int = 60
    scratch_epochs: int = 200
    source_lr: float = 2e-3
    target_lr: float = 1e-3
    scratch_lr: float = 2e-3
    patience: int = 10
    scratch_patience: int = 20
    batch_size: int = 8
    ceiling: bool = True

    def __post_init__(self) -> None:
        self.sources, self.targets, self.seeds = tuple(self.sources), tuple(self.targets), tuple(self.seeds)
        for name in ("sources", "targets", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"MatrixSettings.{name} is empty.")
            if len(set(values)) != len(values):
                raise ValueError(f"MatrixSettings.{name} lists {values}: each once.")
        if self.units not in ("characters", "phones"):
            raise ValueError(f"MatrixSettings.units={self.units!r}; expected 'characters' or 'phones'.")
        for name in ("source_utterances", "target_utterances", "source_epochs", "target_epochs", "scratch_epochs",
                     "patience", "scratch_patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MatrixSettings.{name}={value!r}: expected an integer >= 1.")
        if self.target_utterances >= self.source_utterances:
            raise ValueError(f"MatrixSettings: the small budget ({self.target_utterances} utterances) must be below "
                             f"the large one ({self.source_utterances}).")

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys([*self.sources, *self.targets]))


@dataclass
class Cell:
    """One run: which kind, on which target (or source), from which start, with which seed, and its results."""

    kind: str
    language: str
    init: str
    seed: int
    train_utterances: int
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        name = f"{self.init}-to-{self.language}" if self.kind == "transfer" else self.language
        return f"cells/{self.kind}/{name}/seed{self.seed}.json"


Corpus = Callable[[str], dict[str, list[dict]]]  # language -> {split: [{"audio": ..., "transcript": ...}]}


def espeak_corpus(languages: Sequence[str], per_language: int = 400) -> Corpus:
    """The transcribed espeak-ng corpus of ``languages`` (built into the cache on first use).

    8 pseudo-speakers per language (6 train, 1 validation, 1 test), noise at 10-30 dB SNR.
    """
    from mtransfer.builtins.speech_corpus import build_speech_corpus, corpus_splits
    from mtransfer.cache import default_cache_dir

    folder = default_cache_dir().parent / "speech" / ("espeak-matrix-v1-" + "-".join(languages))
    build_speech_corpus(folder, languages, per_language=per_language, speakers=8, test_speakers=1,
                        validation_speakers=1, workers=2, noise_snr=(10.0, 30.0))
    every = corpus_splits(folder)
    return lambda language: {s: [r for r in rows if r["label"] == language] for s, rows in every.items()}


class TransferMatrix:
    """The results of :func:`run_transfer_matrix`: every cell, and the views of them."""

    def __init__(self, settings: MatrixSettings, cells: list[Cell]) -> None:
        self.settings, self.cells = settings, cells

    def runs(self, kind: str, language: str, init: str | None = None, metric: str = "test_cer") -> np.ndarray:
        """The metric of every seed of one cell (empty when it was not run)."""
        return np.array([c.results[metric] for c in self.cells
                         if c.kind == kind and c.language == language and (init is None or c.init == init)], dtype=float)

    def columns(self) -> list[str]:
        extra = [SCRATCH] + ([CEILING] if self.settings.ceiling else [])
        return [*self.settings.sources, *extra]

    def cell_values(self, target: str, column: str, metric: str = "test_cer") -> np.ndarray:
        if column == SCRATCH:
            return self.runs("scratch", target, metric=metric)
        if column == CEILING:
            return self.runs("ceiling", target, metric=metric)
        return self.runs("transfer", target, column, metric)

    def mean_matrix(self, metric: str = "test_cer") -> np.ndarray:
        """Shape: ``(targets, columns)``; NaN where a cell was not run (a language's own transfer)."""
        return np.array([[v.mean() if len(v := self.cell_values(t, c, metric)) else np.nan for c in self.columns()]
                         for t in self.settings.targets])

    def reduction(self, target: str, metric: str = "test_cer") -> dict[str, float]:
        """``random-init metric - transfer metric`` per source (seed means): how much each source helped."""
        base = self.runs("scratch", target, metric=metric)
        out = {}
        for source in self.settings.sources:
            got = self.runs("transfer", target, source, metric)
            if len(got) and len(base):
                out[source] = float(base.mean() - got.mean())
        return out

    def table(self, metric: str = "test_cer") -> str:
        """The lecture's layout: one row per target, one column per source, then random init and the ceiling;
        mean ± spread (sample standard deviation) over seeds; the best source in bold (every one, when tied)."""
        lines = ["| target \\ start | " + " | ".join(self.columns()) + " |", "|---" * (len(self.columns()) + 1) + "|"]
        for t in self.settings.targets:
            means = {s: v.mean() for s in self.settings.sources if len(v := self.cell_values(t, s, metric))}
            best = {c for c, v in means.items() if v == min(means.values())}
            cells = []
            for c in self.columns():
                v = self.cell_values(t, c, metric)
                text = "—" if not len(v) else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
                cells.append(f"**{text}**" if c in best else text)
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def check_ranker(self, scores: Mapping[str, Mapping[str, float]], *, metric: str = "test_cer", bootstrap: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
        """How well a ranking of sources (target -> source -> score, higher = better source) predicts the transfer.

        Per target: Kendall's tau and Spearman's rho against the measured reduction, top-1 hit
        and regret (the metric of the ranker's pick minus that of the best source). Pooled over
        targets: mean tau and rho, top-1 rate and mean regret, each with a bootstrap interval
        over targets (95%).
        """
        from mtransfer.ranking.validate import correlate

        per_target: dict[str, dict[str, Any]] = {}
        for t in self.settings.targets:
            achieved = self.reduction(t, metric)
            if t not in scores or len(achieved) < 2:
                continue
            row = correlate(dict(scores[t]), achieved)
            picked = max((s for s in achieved if s in scores[t]), key=lambda s: scores[t][s])
            row["regret"] = round(max(achieved.values()) - achieved[picked], 4)
            per_target[t] = row
        if not per_target:
            raise ValueError("check_ranker: no target has scores and at least two measured sources.")
        pooled = {}
        rng = np.random.default_rng(seed)
        names = list(per_target)
        for key in ("kendall_tau", "spearman_rho", "top1_hit", "regret"):
            values = np.array([np.nan if not isinstance(v := per_target[n][key], (int, float)) else float(v)
                               for n in names])
            values = values[~np.isnan(values)]
            if not len(values):
                continue
            draws = rng.choice(values, size=(bootstrap, len(values))).mean(1) if bootstrap else values[None].mean(1)
            pooled[key] = {"mean": round(float(values.mean()), 4),
                           "ci": [round(float(np.quantile(draws, 0.025)), 4), round(float(np.quantile(draws, 0.975)), 4)],
                           "targets": int(len(values))}
        return {"per_target": per_target, "pooled": pooled}

    def plot(self, path: str | Path, metric: str = "test_cer") -> Path:
        """A heatmap of the table (targets x sources, random init, ceiling) as a PNG."""
        from matplotlib.figure import Figure

        from mtransfer.plots import save_figure

        m = self.mean_matrix(metric)
        cols = self.columns()
        fig = Figure(figsize=(1.4 + 1.0 * len(cols), 1.0 + 0.55 * len(self.settings.targets)))
        ax = fig.add_subplot()
        im = ax.imshow(m, cmap="viridis_r", vmin=0.0, vmax=max(1e-9, float(np.nanmax(m))))
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(self.settings.targets)), self.settings.targets)
        ax.set_xlabel("start (source language, or none)")
        ax.set_ylabel("target")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white")
        ax.set_title(f"target {metric.replace('test_', '').upper()} after adapting (mean over seeds)", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        return save_figure(fig, path, dpi=120)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "cells": [asdict(c) for c in self.cells]}

    @classmethod
    def load(cls, folder: str | Path) -> TransferMatrix:
        """The matrix written into ``folder`` (``matrix.json``)."""
        data = json.loads((Path(folder) / "matrix.json").read_text(encoding="utf-8"))
        return cls(MatrixSettings(**data["settings"]), [Cell(**c) for c in data["cells"]])


def _plan(settings: MatrixSettings) -> list[Cell]:
    s = settings
    cells = [Cell("source", src, "random", seed, s.source_utterances) for seed in s.seeds for src in s.sources]
    for t in s.targets:
        for seed in s.seeds:
            cells.append(Cell("scratch", t, "random", seed, s.target_utterances))
            if s.ceiling:
                cells.append(Cell("ceiling", t, "random", seed, s.source_utterances))
            cells += [Cell("transfer", t, src, seed, s.target_utterances) for src in s.sources if src != t]
    return cells


def _datasets(cell: Cell, settings: MatrixSettings, corpus: Corpus) -> tuple[Any, Any, Any]:
    """The cell's training subset (drawn with its seed), validation and test sets, with one vocabulary."""
    import random

    import mtransfer as mt

    splits = corpus(cell.language)
    train_rows = splits.get("train", [])
    if len(train_rows) < cell.train_utterances:
        raise ValueError(f"{cell.language}: {len(train_rows)} training utterances, fewer than the "
                         f"{cell.train_utterances} a {cell.kind} run needs.")
    keep = sorted(random.Random(f"{cell.seed}-{cell.language}").sample(range(len(train_rows)), cell.train_utterances))
    vocabulary = f"phones:{cell.language}" if settings.units == "phones" else None
    load = lambda rows, vocab: mt.load_labeled([{"audio": r["audio"], "transcript": r["transcript"]} for r in rows],  # noqa: E731
                                               input_column="audio", label_column="transcript", task="ctc",
                                               vocabulary=vocab)
    train = load([train_rows[i] for i in keep], vocabulary)
    return train, load(splits["validation"], train.vocabulary), load(splits["test"], train.vocabulary)


def _run_cell(cell: Cell, settings: MatrixSettings, corpus: Corpus, out: Path, progress: bool) -> dict[str, Any]:
    import mtransfer as mt

    s = settings
    train, valid, test = _datasets(cell, s, corpus)
    epochs, lr, patience = {"source": (s.source_epochs, s.source_lr, s.patience),
                            "ceiling": (s.source_epochs, s.source_lr, s.patience),
                            "scratch": (s.scratch_epochs, s.scratch_lr, s.scratch_patience),
                            "transfer": (s.target_epochs, s.target_lr, s.patience)}[cell.kind]
    if cell.kind == "transfer":
        start = out / "sources" / cell.init / f"seed{cell.seed}" / "model"
        model = mt.TransferModel.from_pretrained(start).with_new_head(train.vocabulary, seed=cell.seed)
    else:
        model = mt.TransferModel.from_backbone("audio", s.model, labels=train.vocabulary, task="ctc", seed=cell.seed)
    # a source model is where transfer cells find it; other runs mirror their cell's path
    run_dir = (out / "sources" / cell.language / f"seed{cell.seed}" if cell.kind == "source"
               else out / "runs" / Path(cell.path).relative_to("cells").with_suffix(""))
    results = train_ctc_run(model, train, valid, test, run_dir, epochs=epochs, lr=lr, patience=patience,
                            batch_size=s.batch_size, seed=cell.seed, progress=progress)
    return {**results, "copied_rows": getattr(model, "copied_rows", None) if cell.kind == "transfer" else None,
            "test_utterances": len(test), "vocabulary_size": len(train.vocabulary)}


def train_ctc_run(model: Any, train: Any, valid: Any, test: Any, run_dir: str | Path, *, epochs: int, lr: float,
                  patience: int, batch_size: int, seed: int, progress: bool = False, plot: bool = False) -> dict[str, Any]:
    """One CTC run as the matrix and the speech demo make it: every layer trains (linear schedule, 10%
    warmup), the epoch with the best validation CER is kept (``patience`` epochs without a better one
    end it), then the test set is scored. Returns test CER / WER, best epoch, epochs run, best
    validation CER and training seconds."""
    import mtransfer as mt

    args = mt.TrainingArguments(output_dir=str(run_dir), strategy="full", num_epochs=epochs, learning_rate=lr,
                                lr_schedule="linear", warmup_ratio=0.1, batch_size=batch_size, eval_batch_size=16,
                                metric_for_best_model="cer", early_stopping_patience=patience, seed=seed,
                                progress_bar=progress, report_to=[], plot=plot, show_transcripts=False,
                                overwrite_output_dir=True)
    trainer = mt.Trainer(model, args, train, valid)
    began = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - began
    metrics = trainer.evaluate(test)
    return {"test_cer": metrics["eval_cer"], "test_wer": metrics["eval_wer"], "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "best_valid_cer": result.best_value, "train_seconds": round(seconds, 1)}


def run_transfer_matrix(settings: MatrixSettings, output_dir: str | Path, *, corpus: Corpus | None = None,
                        progress: bool = False, log: Callable[[str], None] | None = print) -> TransferMatrix:
    """Run every cell not yet in ``output_dir`` (sources first), then write ``matrix.json``, ``matrix.md`` and ``matrix.png``.

    Args:
        settings: The languages, budgets and schedules.
        output_dir: Where runs, cells and the outputs go; a rerun reads finished cells instead of training them.
        corpus: language -> splits with ``audio`` and ``transcript`` (default: :func:`espeak_corpus`).
        progress: Progress bars per run. log: Called with one line per finished cell (None: silent).
    """
    from mtransfer.atomic import atomic_write_bytes, atomic_write_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus or espeak_corpus(settings.languages)
    cells = _plan(settings)
    for cell in cells:
        path = out / cell.path
        if path.is_file():
            cell.results = json.loads(path.read_text(encoding="utf-8"))["results"]
            continue
        cell.results = _run_cell(cell, settings, corpus, out, progress)
        atomic_write_json(path, asdict(cell))
        if log:
            name = f"{cell.init} -> {cell.language}" if cell.kind == "transfer" else cell.language
            log(f"{cell.kind:8s} {name:12s} seed {cell.seed}: test CER {cell.results['test_cer']:.3f}, "
                f"WER {cell.results['test_wer']:.3f} ({cell.results['train_seconds']:.0f} s)")
    matrix = TransferMatrix(settings, cells)
    atomic_write_json(out / "matrix.json", matrix.to_dict())
    atomic_write_bytes(out / "matrix.md", (matrix.table() + "\n").encode("utf-8"))
    matrix.plot(out / "matrix.png")
    return matrix
