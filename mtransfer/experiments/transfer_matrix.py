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
with the measured reductions through :func:`mtransfer.ranking.correlate`.

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

from mtransfer.atomic import atomic_write_bytes, atomic_write_json
from mtransfer.builtins.speech_corpus import build_speech_corpus, corpus_splits
from mtransfer.cache import default_cache_dir
from mtransfer.data import load_labeled
from mtransfer.locks import OutputLockedError, acquire, file_lock
from mtransfer.model import TransferModel
from mtransfer.plots import save_figure
from mtransfer.record import RUN_FLAGS, describe_flags
from mtransfer.ranking.backbones import correlate
from mtransfer.training import DEFAULT_CTC_PLATEAU, Trainer, TrainingArguments

KINDS = ("source", "pooled", "scratch", "transfer", "ceiling")
SCRATCH, CEILING = "random init", "large budget"
POOLED = "all-sources"  # the language of the pooled run: POOLED-<the sources it pools>, see pooled_language


def pooled_language(sources: Sequence[str]) -> str:
    """The pooled run's "language": the sources it pools, in order, so that a matrix folder resumed with other
    sources trains a pooled model of its own instead of reading one trained on the old ones."""
    return "-".join([POOLED, *sources])


@dataclass
class MatrixSettings:
    """What the matrix runs; validated at construction.

    Args:
        sources / targets: espeak-ng languages (gettext catalog codes). A language may be both:
            its own transfer cell is then left out (the ceiling covers it).
        seeds: One run per seed in every cell (at least one; two or more give a spread).
        units: ``characters`` (each language's own characters; rows of shared characters copied)
            or ``phones`` (espeak-ng IPA phones: one inventory across languages).
        model: The encoder every run starts from (random init presets: ``builtin:w2v-bert-mini``, the
            0.68 M-parameter conformer on 40 ms frames the defaults are sized for).
        source_utterances / target_utterances: The large and the small budget (training utterances).
        target_validation: Validation utterances of the small-budget runs (transfer and random init): the first
            ones of the validation speaker. A small target comes with a small development set, so its
            checkpoint is chosen on one (and the 60 transfer runs do not spend most of each epoch on
            evaluation); the large-budget runs validate on the whole speaker. Test sets are whole.
        *_epochs, *_lr, *_patience: Epoch limits, peak learning rates and patience of the
            large-budget (source, ceiling and pooled), transfer and random-init (scratch) runs; each
            stops after its patience in epochs without a better validation CER and keeps its best
            epoch. The pooled run, whose vocabulary holds every source's script, takes the
            random-init patience.
        min_epochs: No run stops early before this epoch. A transfer run's new head often scores best at
            epoch 1 and then sits near the all-blank plateau while the learning rate warms up; with a
            patience of 6 and no such floor, 7 of 60 transfer runs kept epoch 1 and stopped at epoch 7,
            6 of them worse than random init (the README's first run at these sizes).
        ctc_plateau: Every run's all-blank plateau rule (``TrainingArguments.ctc_plateau``): an epoch
            whose hypotheses hold fewer than this share of the reference characters is never a
            run's best, and patience counts from the first epoch off the plateau. None: off (the
            matrices measured before the rule).
        ceiling: Also train each target with the large budget.
        pooled: Also train one model on all sources pooled (the large budget split evenly across
            them; first seed only): the "acoustic model" whose features a language-ID ranker can use.
        group_by_length: Every run's training batches hold utterances of similar length
            (``TrainingArguments.group_by_length``); False: shuffled batches (the matrices measured
            before it).
        synthesizer: The corpus: ``espeak`` (:func:`espeak_corpus`, the published matrix) or ``festival``
            (:func:`festival_corpus`: other voices, speakers and texts; the check that a finding is not
            espeak-ng's alone).

    The defaults (6 sources, 5 targets, 2 seeds: 12 source, 10 ceiling, 1 pooled, 60 transfer and
    10 random-init runs) take 17 minutes on 2 CPU cores with ``workers=2`` from an empty cache (24.5 before
    length-grouped batches, on the same machine); the README gives the measured times.
    """

    sources: Sequence[str] = ("bn", "hi", "tr", "ru", "de", "es")
    targets: Sequence[str] = ("as", "mr", "ne", "it", "pt")
    seeds: Sequence[int] = (0, 1)
    units: str = "characters"
    model: str = "builtin:w2v-bert-mini"
    source_utterances: int = 200
    target_utterances: int = 30
    target_validation: int = 25
    source_epochs: int = 15
    target_epochs: int = 30
    scratch_epochs: int = 120
    source_lr: float = 3e-3
    target_lr: float = 1e-3
    scratch_lr: float = 2e-3
    source_patience: int = 4
    patience: int = 6
    scratch_patience: int = 20
    min_epochs: int = 12
    ctc_plateau: float | None = DEFAULT_CTC_PLATEAU
    batch_size: int = 8
    ceiling: bool = True
    pooled: bool = True
    group_by_length: bool = True
    synthesizer: str = "espeak"

    def __post_init__(self) -> None:
        self.sources, self.targets, self.seeds = tuple(self.sources), tuple(self.targets), tuple(self.seeds)
        for name in ("sources", "targets", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"MatrixSettings.{name} is empty.")
            if len(set(values)) != len(values):
                raise ValueError(f"MatrixSettings.{name} lists {values}: each once.")
        if self.synthesizer not in ("espeak", "festival"):
            raise ValueError(f"MatrixSettings.synthesizer={self.synthesizer!r}; expected 'espeak' (espeak-ng) or "
                             "'festival' (the second corpus).")
        if self.units not in ("characters", "phones"):
            raise ValueError(f"MatrixSettings.units={self.units!r}; expected 'characters' or 'phones'.")
        for name in ("source_utterances", "target_utterances", "target_validation", "source_epochs", "target_epochs",
                     "scratch_epochs", "source_patience", "patience", "scratch_patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MatrixSettings.{name}={value!r}: expected an integer >= 1.")
        if isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) or self.min_epochs < 0:
            raise ValueError(f"MatrixSettings.min_epochs={self.min_epochs!r}: expected an integer >= 0.")
        if self.ctc_plateau is not None and (isinstance(self.ctc_plateau, bool) or not 0.0 < self.ctc_plateau < 1.0):
            raise ValueError(f"MatrixSettings.ctc_plateau={self.ctc_plateau!r}: expected a fraction in (0, 1) or None.")
        if self.pooled and self.units == "phones":
            raise ValueError("MatrixSettings.pooled trains on every source's characters at once; with units='phones' "
                             "set pooled=False.")
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
    def name(self) -> str:
        """``kind/language/seedN`` (``transfer/SOURCE-to-TARGET/seedN``): how ``--cell`` and ``--list-cells`` name it."""
        language = f"{self.init}-to-{self.language}" if self.kind == "transfer" else self.language
        return f"{self.kind}/{language}/seed{self.seed}"

    @property
    def path(self) -> str:
        return f"cells/{self.name}.json"

    @property
    def needs(self) -> Cell | None:
        """The cell whose model this one starts from (a transfer cell's source), or None."""
        return Cell("source", self.init, "random", self.seed, 0) if self.kind == "transfer" else None


FLAG_MARKS = {"all_blank": "†", "improving_at_cap": "‡"}  # how matrix.md marks a cell with a flagged run

Corpus = Callable[[str], dict[str, list[dict]]]  # language -> {split: [{"audio": ..., "transcript": ...}]}


class CorpusFolder:
    """A corpus written by :func:`~mtransfer.builtins.speech_corpus.build_speech_corpus`, as the matrix reads it:
    ``corpus(language)`` -> ``{split: rows}``. Picklable, so worker processes can read it too."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._splits: dict[str, list[dict]] | None = None

    def __call__(self, language: str) -> dict[str, list[dict]]:
        if self._splits is None:
            self._splits = corpus_splits(self.folder)
        return {s: [r for r in rows if r["label"] == language] for s, rows in self._splits.items()}

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "_splits": None}


def espeak_corpus(languages: Sequence[str], per_language: int = 400, build: bool = True,
                  timeout: float = 3600.0) -> CorpusFolder:
    """The transcribed espeak-ng corpus of ``languages`` (built into the cache on first use).

    8 pseudo-speakers per language (6 train, 1 validation, 1 test), noise at 10-30 dB SNR.
    ``build=False`` waits (up to ``timeout`` seconds) for another process to finish building it.
    """
    size = "" if per_language == 400 else f"-n{per_language}"
    folder = default_cache_dir().parent / "speech" / ("espeak-matrix-v1-" + "-".join(languages) + size)
    return _cached_corpus(folder, lambda: build_speech_corpus(
        folder, languages, per_language=per_language, speakers=8, test_speakers=1, validation_speakers=1, workers=2,
        noise_snr=(10.0, 30.0)), build, timeout)


def festival_corpus(languages: Sequence[str], per_language: int = 360, build: bool = True,
                    timeout: float = 3600.0) -> CorpusFolder:
    """The second, independent corpus (:mod:`mtransfer.builtins.festival_corpus`: Festival's voices built from
    human recordings, texts the espeak corpus does not use), with the espeak corpus's speakers, splits and
    noise. 360 per language by default: Telugu has 387 sentences its voice reads."""
    from mtransfer.builtins.festival_corpus import build_festival_corpus

    folder = default_cache_dir().parent / "speech" / (f"festival-matrix-v1-{'-'.join(languages)}-n{per_language}")
    return _cached_corpus(folder, lambda: build_festival_corpus(
        folder, languages, per_language=per_language, speakers=8, test_speakers=1, validation_speakers=1, workers=2,
        noise_snr=(10.0, 30.0)), build, timeout)


SYNTHESIZERS = {"espeak": espeak_corpus, "festival": festival_corpus}


def _cached_corpus(folder: Path, build_it: Callable[[], Any], build: bool, timeout: float) -> CorpusFolder:
    if build:
        with file_lock(folder):  # processes started together (a scheduler's array) build it once
            build_it()
    else:
        waited = 0.0
        while not (folder / "metadata.csv").is_file():
            if waited > timeout:
                raise TimeoutError(f"{folder}: no corpus after {timeout:.0f} s; is the process that builds it running?")
            time.sleep(2.0)
            waited += 2.0
    return CorpusFolder(folder)


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

    def cell_flags(self, target: str, column: str) -> set[str]:
        """The trust flags (:data:`~mtransfer.record.RUN_FLAGS`) of any seed of one cell."""
        kind, init = {SCRATCH: ("scratch", None), CEILING: ("ceiling", None)}.get(column, ("transfer", column))
        return {f for c in self.cells if c.kind == kind and c.language == target and (init is None or c.init == init)
                for f in c.results.get("flags", [])}

    def flag_notes(self) -> list[str]:
        """One line per run (source, pooled or table cell) whose figures may not be trusted, with the marks' meaning."""
        flagged = [c for c in self.cells if c.results.get("flags")]
        if not flagged:
            return []
        lines = ["Runs to read with care (" + "; ".join(f"{FLAG_MARKS[f]} {RUN_FLAGS[f][0]}"
                                                     for f in FLAG_MARKS) + "):", ""]
        for c in flagged:
            marks = "".join(FLAG_MARKS.get(f, "?") for f in c.results["flags"])
            lines.append(f"- {c.name} {marks}: " + "; ".join(describe_flags(c.results["flags"])))
        return lines

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
        mean ± spread (sample standard deviation) over seeds; the best source in bold (every one, when tied); † when a
        seed's run ended all-blank, ‡ when one was still improving at its epoch cap (see :meth:`flag_notes`)."""
        lines = ["| target \\ start | " + " | ".join(self.columns()) + " |", "|---" * (len(self.columns()) + 1) + "|"]
        for t in self.settings.targets:
            means = {s: v.mean() for s in self.settings.sources if len(v := self.cell_values(t, s, metric))}
            best = {c for c, v in means.items() if v == min(means.values())}
            cells = []
            for c in self.columns():
                v = self.cell_values(t, c, metric)
                text = "—" if not len(v) else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
                marks = "".join(FLAG_MARKS[f] for f in FLAG_MARKS if f in self.cell_flags(t, c))
                cells.append((f"**{text}**" if c in best else text) + marks)
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def pretraining_helps(self, metric: str = "test_cer") -> dict[str, dict[str, Any]]:
        """Per target: did pretraining on any source, and on every source, beat random init (seed means)?"""
        out = {}
        for t in self.settings.targets:
            base = self.runs("scratch", t, metric=metric)
            got = {s: v.mean() for s in self.settings.sources if len(v := self.runs("transfer", t, s, metric))}
            if len(base) and got:
                out[t] = {"any": bool(min(got.values()) < base.mean()), "every": bool(max(got.values()) < base.mean()),
                          "worse_than_random_init": sorted(s for s, v in got.items() if v >= base.mean())}
        return out

    def check_ranker(self, scores: Mapping[str, Mapping[str, float]], *, metric: str = "test_cer", bootstrap: int = 1000,
                     seed: int = 0) -> dict[str, Any]:
        """How well a ranking of sources (target -> source -> score, higher = better source) predicts the transfer.

        Per target: Kendall's tau and Spearman's rho against the measured reduction, top-1 hit
        and regret (the metric of the ranker's pick minus that of the best source; with a tie at
        the top, the mean over the tied picks). Pooled over
        targets: mean tau and rho, top-1 rate and mean regret, each with a bootstrap interval
        over targets (95%).
        """
        per_target: dict[str, dict[str, Any]] = {}
        for t in self.settings.targets:
            achieved = self.reduction(t, metric)
            if t not in scores or len(achieved) < 2:
                continue
            row = correlate(dict(scores[t]), achieved)
            scored = [s for s in achieved if s in scores[t]]
            top = max(scores[t][s] for s in scored)
            picked = [s for s in scored if scores[t][s] == top]  # a tie: the mean over the tied picks
            row["regret"] = round(max(achieved.values()) - float(np.mean([achieved[s] for s in picked])), 4)
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
    if s.pooled:
        cells.append(Cell("pooled", pooled_language(s.sources), "random", s.seeds[0], s.source_utterances))
    for t in s.targets:
        for seed in s.seeds:
            cells.append(Cell("scratch", t, "random", seed, s.target_utterances))
            if s.ceiling:
                cells.append(Cell("ceiling", t, "random", seed, s.source_utterances))
            cells += [Cell("transfer", t, src, seed, s.target_utterances) for src in s.sources if src != t]
    return cells


def _datasets(cell: Cell, settings: MatrixSettings, corpus: Corpus) -> tuple[Any, Any, Any]:
    """The cell's training subset (drawn with its seed), validation and test sets, with one vocabulary."""
    if cell.kind == "pooled":  # an even share of every source, validated and tested on all of them
        share = -(-cell.train_utterances // len(settings.sources))
        parts = [_datasets_rows(Cell("source", src, "random", cell.seed, share), corpus) for src in settings.sources]
        train_rows = [r for rows, _ in parts for r in rows]
        keep = max(8, 50 // len(parts))  # about one language's worth of validation and test utterances
        splits = {k: [r for _, sp in parts for r in sp[k][:keep]] for k in ("validation", "test")}
        vocabulary = None
    else:
        train_rows, splits = _datasets_rows(cell, corpus)
        if cell.kind in ("transfer", "scratch"):  # a small target's development set is small too
            splits = {**splits, "validation": splits["validation"][:settings.target_validation]}
        vocabulary = f"phones:{cell.language}" if settings.units == "phones" else None
    load = lambda rows, vocab: load_labeled([{"audio": r["audio"], "transcript": r["transcript"]} for r in rows],  # noqa: E731
                                               input_column="audio", label_column="transcript", task="ctc",
                                               vocabulary=vocab)
    train = load(train_rows, vocabulary)
    return train, load(splits["validation"], train.vocabulary), load(splits["test"], train.vocabulary)


def _datasets_rows(cell: Cell, corpus: Corpus) -> tuple[list[dict], dict[str, list[dict]]]:
    """The cell's training rows (``train_utterances`` drawn with its seed) and its language's splits."""
    import random

    splits = corpus(cell.language)
    rows = splits.get("train", [])
    if len(rows) < cell.train_utterances:
        raise ValueError(f"{cell.language}: {len(rows)} training utterances, fewer than the "
                         f"{cell.train_utterances} a {cell.kind} run needs.")
    for split in ("validation", "test"):
        if not splits.get(split):
            raise ValueError(f"{cell.language}: no {split} utterances in the corpus.")
    keep = sorted(random.Random(f"{cell.seed}-{cell.language}").sample(range(len(rows)), cell.train_utterances))
    return [rows[i] for i in keep], splits


def _run_dir(cell: Cell, out: Path) -> Path:
    """Where a cell's run trains; a source (or pooled) model is where transfer cells and rankers find it."""
    if cell.kind in ("source", "pooled"):
        return out / "sources" / cell.language / f"seed{cell.seed}"
    return out / "runs" / Path(cell.path).relative_to("cells").with_suffix("")


def source_model_scores(settings: MatrixSettings, output_dir: str | Path, corpus: Corpus, *,
                        methods: Sequence[str] = ("head", "zero-shot", "quality"),
                        num_threads: int | None = None) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    """The model-based rankers (:mod:`mtransfer.ranking.source_models`) on the matrix's own source models (the first
    seed's) and each target's small-budget training and validation data (the first seed's subset, as the transfer
    runs see it): ``({method: {target: {source: score}}}, {method: seconds})``."""
    from mtransfer.ranking.source_models import rank_source_models

    out, first = Path(output_dir), settings.seeds[0]
    scores: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    seconds = {m: 0.0 for m in methods}
    for target in settings.targets:
        train, valid, _ = _datasets(Cell("scratch", target, "random", first, settings.target_utterances), settings, corpus)
        models = {src: out / "sources" / src / f"seed{first}" / "model" for src in settings.sources if src != target}
        ranked = rank_source_models(models, train, valid, methods=methods, batch_size=settings.batch_size, seed=first,
                                    num_threads=num_threads)
        for method, by_source in ranked.items():
            scores[method][target] = {src: r["score"] for src, r in by_source.items()}
            seconds[method] += sum(r["seconds"] for r in by_source.values())
    return scores, seconds


def pooled_model_path(output_dir: str | Path, settings: MatrixSettings) -> Path:
    """The folder of the model trained on all sources pooled (``settings.pooled``)."""
    return Path(output_dir) / "sources" / pooled_language(settings.sources) / f"seed{settings.seeds[0]}" / "model"


def _run_cell(cell: Cell, settings: MatrixSettings, corpus: Corpus, out: Path, progress: bool,
              num_threads: int | None = None) -> dict[str, Any]:

    s = settings
    train, valid, test = _datasets(cell, s, corpus)
    large = (s.source_epochs, s.source_lr, s.source_patience)
    # the pooled model's vocabulary holds every source's script: it leaves the all-blank plateau later (with the
    # sources' patience of 4 it stopped on it at epoch 5), so it gets the random-init runs' patience
    pooled = (s.source_epochs, s.source_lr, s.scratch_patience)
    epochs, lr, patience = {"source": large, "ceiling": large, "pooled": pooled,
                            "scratch": (s.scratch_epochs, s.scratch_lr, s.scratch_patience),
                            "transfer": (s.target_epochs, s.target_lr, s.patience)}[cell.kind]
    if cell.kind == "transfer":
        start = out / "sources" / cell.init / f"seed{cell.seed}" / "model"
        model = TransferModel.from_pretrained(start).with_new_head(train.vocabulary, seed=cell.seed)
    else:
        model = TransferModel.from_backbone("audio", s.model, labels=train.vocabulary, task="ctc", seed=cell.seed)
    # a source model is where transfer cells find it; other runs mirror their cell's path
    run_dir = _run_dir(cell, out)
    results = train_ctc_run(model, train, valid, test, run_dir, epochs=epochs, lr=lr, patience=patience,
                            batch_size=s.batch_size, seed=cell.seed, progress=progress, num_threads=num_threads,
                            min_epochs=s.min_epochs, ctc_plateau=s.ctc_plateau, group_by_length=s.group_by_length)
    return {**results, "copied_rows": getattr(model, "copied_rows", None) if cell.kind == "transfer" else None,
            "test_utterances": len(test), "vocabulary_size": len(train.vocabulary)}


def train_ctc_run(model: Any, train: Any, valid: Any, test: Any, run_dir: str | Path, *, epochs: int, lr: float,
                  patience: int, batch_size: int, seed: int, progress: bool = False, plot: bool = False,
                  num_threads: int | None = None, min_epochs: int = 0,
                  ctc_plateau: float | None = DEFAULT_CTC_PLATEAU, group_by_length: bool | None = None) -> dict[str, Any]:
    """One CTC run as the matrix and the speech demo make it: every layer trains (linear schedule, 10%
    warmup), the epoch with the best validation CER off the all-blank plateau is kept (``patience``
    epochs without a better one, counted from the first epoch off the plateau, end it, though not
    before ``min_epochs``, or ``epochs`` when that is fewer), then the test set is scored. Returns test CER / WER, best epoch, epochs
    run, best validation CER, training seconds and the run's trust flags (``all_blank``,
    ``improving_at_cap``)."""
    args = TrainingArguments(output_dir=str(run_dir), strategy="full", num_epochs=epochs, learning_rate=lr,
                             lr_schedule="linear", warmup_ratio=0.1, batch_size=batch_size, eval_batch_size=16,
                             metric_for_best_model="cer", early_stopping_patience=patience, seed=seed,
                             progress_bar=progress, report_to=[], plot=plot, show_transcripts=False,
                             overwrite_output_dir=True, num_threads=num_threads, min_epochs=min(min_epochs, epochs),
                             ctc_plateau=ctc_plateau, group_by_length=group_by_length)
    trainer = Trainer(model, args, train, valid)
    began = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - began
    metrics = trainer.evaluate(test)
    return {"test_cer": metrics["eval_cer"], "test_wer": metrics["eval_wer"], "best_epoch": result.best_epoch,
            "epochs_run": len(result.history), "best_valid_cer": result.best_value, "train_seconds": round(seconds, 1),
            "flags": result.flags}


# what a cell's run depends on beyond its own path (kind, languages, seed): a folder holds one such setting
RUN_FIELDS = ("units", "model", "source_utterances", "target_utterances", "target_validation", "source_epochs",
              "target_epochs", "scratch_epochs", "source_lr", "target_lr", "scratch_lr", "source_patience", "patience",
              "scratch_patience", "min_epochs", "ctc_plateau", "batch_size", "group_by_length", "synthesizer")


def check_settings(settings: MatrixSettings, output_dir: str | Path) -> None:
    """Record the run settings in ``output_dir/settings.json``, or refuse a folder whose cells were trained with
    others (naming each field that differs). Languages, seeds, ``ceiling`` and ``pooled`` may change: they only
    add or leave out cells."""
    path = Path(output_dir) / "settings.json"
    wanted = {k: getattr(settings, k) for k in RUN_FIELDS}
    if path.is_file():
        held = json.loads(path.read_text(encoding="utf-8"))
        held.setdefault("synthesizer", "espeak")  # folders from before the second corpus
        held.setdefault("group_by_length", False)  # folders from before length-grouped batches
        differ = [f"{k}: {held.get(k)!r} there, {wanted[k]!r} now" for k in RUN_FIELDS if held.get(k) != wanted[k]]
        if differ:
            raise ValueError(f"{output_dir} holds a matrix trained with other settings ({'; '.join(differ)}); use "
                             "another output folder, or the same settings to resume it.")
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)


def _claim(out: Path, cell: Cell) -> Path | None:
    """Take ``cell`` for this process (a lock file with its pid; a dead holder's lock is taken over), or None."""
    try:
        return acquire(out / "claims" / Path(cell.path).with_suffix(""))
    except OutputLockedError:
        return None


def _ready(cell: Cell, out: Path) -> bool:
    """A transfer cell waits for its source model's cell."""
    return cell.needs is None or (out / cell.needs.path).is_file()


def _train_cell(cell: Cell, settings: MatrixSettings, corpus: Corpus, out: Path, progress: bool,
                num_threads: int | None, log: Callable[[str], None] | None, worker: str) -> None:
    """Train a claimed cell and write its results (``cells/...json``, atomically); one log line."""
    cell.results = _run_cell(cell, settings, corpus, out, progress, num_threads)
    atomic_write_json(out / cell.path, asdict(cell))
    if log:
        name = f"{cell.init} -> {cell.language}" if cell.kind == "transfer" else cell.language
        log(f"{worker}{cell.kind:8s} {name:12s} seed {cell.seed}: test CER {cell.results['test_cer']:.3f}, "
            f"WER {cell.results['test_wer']:.3f} ({cell.results['train_seconds']:.0f} s)")


def plan_cells(settings: MatrixSettings) -> list[Cell]:
    """Every cell of the matrix in dependency order: the sources (and the pooled model) before any transfer cell."""
    return _plan(settings)


def find_cell(settings: MatrixSettings, which: int | str) -> Cell:
    """The cell at index ``which`` of :func:`plan_cells`, or named ``which`` (``transfer/bn-to-as/seed0``)."""
    cells = _plan(settings)
    if isinstance(which, str) and which.strip().isdigit():
        which = int(which)
    if isinstance(which, int):
        if not 0 <= which < len(cells):
            raise ValueError(f"--cell {which}: the matrix has cells 0 to {len(cells) - 1} (see --list-cells).")
        return cells[which]
    named = {c.name: c for c in cells}
    if which not in named:
        import difflib

        close = difflib.get_close_matches(which, list(named), n=1)
        raise ValueError(f"--cell {which!r}: no such cell in this matrix" + (f" (did you mean {close[0]}?)" if close else "")
                         + "; --list-cells prints every name.")
    return named[which]


def run_cell(settings: MatrixSettings, output_dir: str | Path, corpus: Corpus, which: int | str, *, wait: float = 0.0,
             progress: bool = False, log: Callable[[str], None] | None = print, num_threads: int | None = None,
             poll: float = 2.0) -> str:
    """Train exactly one cell (by index or name), as one task of a scheduler's array: ``"trained"``, or ``"done"``
    when its results exist already.

    A transfer cell needs its source model: without it the call waits up to ``wait`` seconds for another task to
    write it, then refuses (naming the cell to run first). A cell another process holds is waited for the same way.
    Any number of these calls (and :func:`work_cells` loops) may share ``output_dir``.
    """
    out = Path(output_dir)
    check_settings(settings, out)
    cell = find_cell(settings, which)
    deadline = time.monotonic() + wait
    while True:
        if (out / cell.path).is_file():
            return "done"
        if not _ready(cell, out):
            problem = (f"cell {cell.name} starts from the model of cell {cell.needs.name}, which is not trained yet in "
                       f"{out}; run that cell first (it comes earlier in --list-cells) or give --wait SECONDS")
        elif (claim := _claim(out, cell)) is not None:
            try:
                if (out / cell.path).is_file():  # finished by another process since the check
                    return "done"
                _train_cell(cell, settings, corpus, out, progress, num_threads, log, "")
                return "trained"
            finally:
                claim.unlink(missing_ok=True)
        else:
            problem = (f"cell {cell.name} is being trained by another process (its claim: "
                       f"{out / 'claims' / Path(cell.path).with_suffix('')})")
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait:.0f} s" if wait else ""
            raise TimeoutError(f"{problem}{waited}.")
        time.sleep(poll)


def work_cells(settings: MatrixSettings, output_dir: str | Path, corpus: Corpus, *, progress: bool = False,
               log: Callable[[str], None] | None = print, num_threads: int | None = None, poll: float = 2.0,
               worker: str = "") -> int:
    """Train pending cells, in plan order, until none is left; returns how many this process trained.

    Any number of processes may run this on one ``output_dir`` at once (the ``workers`` of
    :func:`run_transfer_matrix`, ``accelerate launch`` processes, or jobs on machines sharing
    the folder): each cell is claimed by a lock file before it trains, a transfer cell waits
    until its source model is written, and a finished cell is never trained again. A process
    that waits on cells others hold polls every ``poll`` seconds.
    """
    out = Path(output_dir)
    check_settings(settings, out)
    cells, trained = _plan(settings), 0
    while pending := [c for c in cells if not (out / c.path).is_file()]:
        for cell in pending:
            if not _ready(cell, out) or (claim := _claim(out, cell)) is None:
                continue
            try:
                if (out / cell.path).is_file():  # finished by another process since the listing
                    continue
                _train_cell(cell, settings, corpus, out, progress, num_threads, log, worker)
            finally:
                claim.unlink(missing_ok=True)
            trained += 1
            break  # list again: the plan order puts sources (which others wait for) first
        else:
            time.sleep(poll)  # every pending cell is held by another process or waits for a source
    return trained


def _worker(settings: MatrixSettings, output_dir: str, corpus: Corpus, index: int, num_threads: int,
            progress: bool, log: bool) -> int:
    return work_cells(settings, output_dir, corpus, progress=progress,
                      log=(lambda line: print(line, flush=True)) if log else None,
                      num_threads=num_threads, worker=f"[worker {index}] ")


def _run_workers(settings: MatrixSettings, out: Path, corpus: Corpus, workers: int, progress: bool,
                 log: bool, num_threads: int | None = None) -> int:
    """``workers`` processes (spawned), each on its own GPU when there are GPUs, else on its share of the CPU cores."""
    import multiprocessing as mp
    import os
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    try:
        pickle.dumps(corpus)
    except Exception as e:  # a lambda or a closure: the workers could not receive it
        raise ValueError(f"run_transfer_matrix(workers={workers}): the corpus must be picklable (e.g. a CorpusFolder); "
                         f"{type(corpus).__name__} is not ({e}).") from None
    import torch

    gpus = torch.cuda.device_count()
    threads = num_threads or max(1, (os.cpu_count() or 1) // workers)
    futures = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for k in range(workers):
            if gpus:  # the spawned process reads this at its first CUDA call
                os.environ["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
            futures.append(pool.submit(_worker, settings, str(out), corpus, k, threads, progress, log))
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        return sum(f.result() for f in futures)  # a worker's error is raised here


def run_transfer_matrix(settings: MatrixSettings, output_dir: str | Path, *, corpus: Corpus | None = None,
                        workers: int = 1, progress: bool = False, log: Callable[[str], None] | None = print,
                        wait: bool = True, num_threads: int | None = None) -> TransferMatrix:
    """Run every cell not yet in ``output_dir`` (sources first), then write ``matrix.json``, ``matrix.md`` and ``matrix.png``.

    Args:
        settings: The languages, budgets and schedules.
        output_dir: Where runs, cells and the outputs go; a rerun reads finished cells instead of training them.
        corpus: language -> splits with ``audio`` and ``transcript`` (default: the settings' synthesizer's corpus,
            :func:`espeak_corpus` or :func:`festival_corpus`).
        workers: Processes that train cells side by side (each a whole run on its own device: GPU
            ``k % gpus``, or ``cores // workers`` CPU threads). The cells are independent once the
            sources exist, and a model this small gains more from runs in parallel than from
            threads or data parallelism within a run.
        progress: Progress bars per run. log: Called with one line per finished cell (None: silent;
            with workers, the workers print).
        wait: Wait for cells other processes hold (launched alongside, see :func:`work_cells`, or a
            scheduler's tasks, see :func:`run_cell`) before writing the outputs.
        num_threads: torch threads per worker (default: the cores shared out among the workers).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_transfer_matrix workers={workers!r}: expected an integer >= 1.")
    out = Path(output_dir)
    check_settings(settings, out)  # before the corpus or any training
    corpus = corpus or SYNTHESIZERS[settings.synthesizer](settings.languages)
    began = time.perf_counter()
    if workers == 1:
        trained = work_cells(settings, out, corpus, progress=progress, log=log, num_threads=num_threads)
    else:
        trained = _run_workers(settings, out, corpus, workers, progress, log is not None, num_threads)
    cells = _plan(settings)
    while wait and any(not (out / c.path).is_file() for c in cells):
        time.sleep(2.0)
    for cell in cells:
        cell.results = json.loads((out / cell.path).read_text(encoding="utf-8"))["results"]
    if log and trained:
        log(f"matrix: trained {trained} of {len(cells)} cells in {time.perf_counter() - began:.0f} s with "
            f"{workers} worker(s)")
    matrix = TransferMatrix(settings, cells)
    atomic_write_json(out / "matrix.json", matrix.to_dict())
    notes = matrix.flag_notes()
    text = (f"Test CER\n\n{matrix.table()}\n\nTest WER\n\n{matrix.table('test_wer')}\n"
            + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    atomic_write_bytes(out / "matrix.md", text.encode("utf-8"))
    matrix.plot(out / "matrix.png")
    return matrix
