"""The source-language transfer matrix on espeak-ng speech, and how well each source ranker predicted it.

Runs (or resumes) mtransfer.speech.matrix.run_transfer_matrix, then ranks the sources for every
target with each language-ID scorer (mfcc, mfcc-frames, fbank), URIEL typological similarity (lang2vec's
data, offline) and a random ranker, and checks
each ranking against the measured CER reductions (Kendall tau, Spearman rho, top-1 hit, regret;
pooled with bootstrap intervals). Writes into --output-dir: matrix.json / matrix.md / matrix.png,
lid_<scorer>.json and lid_<scorer>.png (the posterior tables), rankers.json, rankers.md and
lid_vs_reduction.png (a scatter of each scorer's score against the CER reduction). Run from the
repository root (the full default takes hours on a CPU; a GPU or a smaller budget is advised):

    .venv/bin/python scripts/transfer_matrix.py --output-dir outputs/matrix
    .venv/bin/python scripts/transfer_matrix.py --sources bn hi de --targets as mr --seeds 0 \
        --source-utterances 150 --source-epochs 15 --output-dir /tmp/matrix-small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RANKERS = ("mfcc", "mfcc-frames", "fbank")


def main() -> None:
    from mtransfer.atomic import atomic_write_bytes, atomic_write_json
    from mtransfer.ranking import rank_sources
    from mtransfer.speech.matrix import MatrixSettings, espeak_corpus, run_transfer_matrix

    defaults = MatrixSettings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="+", default=list(defaults.sources))
    ap.add_argument("--targets", nargs="+", default=list(defaults.targets))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    ap.add_argument("--units", choices=["characters", "phones"], default=defaults.units)
    ap.add_argument("--model", default=defaults.model)
    for name in ("source_utterances", "target_utterances", "source_epochs", "target_epochs", "scratch_epochs",
                 "patience", "scratch_patience", "batch_size"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--output-dir", default="outputs/matrix")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()
    settings = MatrixSettings(sources=a.sources, targets=a.targets, seeds=a.seeds, units=a.units, model=a.model,
                              source_utterances=a.source_utterances, target_utterances=a.target_utterances,
                              source_epochs=a.source_epochs, target_epochs=a.target_epochs,
                              scratch_epochs=a.scratch_epochs, patience=a.patience, scratch_patience=a.scratch_patience,
                              batch_size=a.batch_size, ceiling=not a.no_ceiling)
    out = Path(a.output_dir)
    corpus = espeak_corpus(settings.languages)
    matrix = run_transfer_matrix(settings, out, corpus=corpus, progress=a.progress)
    print(matrix.table())

    audio = lambda language: [r["audio"] for r in corpus(language)["train"]]  # noqa: E731
    sources = {s: audio(s) for s in settings.sources}
    checks, scores_by = {}, {}
    for scorer in RANKERS:
        scores = rank_sources(sources, {t: audio(t) for t in settings.targets}, backbone=scorer, bootstrap=200)
        scores.to_json(out / f"lid_{scorer}.json")
        scores.plot(out / f"lid_{scorer}.png")
        by_target = {r.target: dict(zip(r.sources, map(float, r.scores))) for r in scores.rankings}
        scores_by[scorer] = by_target
        checks[scorer] = {"lid_accuracy": scores.lid_accuracy, **matrix.check_ranker(by_target)}
    from mtransfer.ranking.typology import uriel_similarity

    uriel = uriel_similarity(settings.sources, settings.targets)
    scores_by["uriel"] = uriel
    checks["uriel"] = matrix.check_ranker(uriel)
    import numpy as np

    rng = np.random.default_rng(0)
    checks["random"] = matrix.check_ranker({t: {s: float(rng.random()) for s in settings.sources}
                                            for t in settings.targets})
    atomic_write_json(out / "rankers.json", checks)
    lines = ["| ranker | Kendall tau | Spearman rho | top-1 hit rate | regret (CER) |", "|---|---|---|---|---|"]
    for name, check in checks.items():
        pooled = check["pooled"]
        cell = lambda key: (f"{pooled[key]['mean']:.2f} [{pooled[key]['ci'][0]:.2f}, {pooled[key]['ci'][1]:.2f}]"  # noqa: E731
                            if key in pooled else "—")
        lines.append(f"| {name} | {cell('kendall_tau')} | {cell('spearman_rho')} | {cell('top1_hit')} | {cell('regret')} |")
    atomic_write_bytes(out / "rankers.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    scatter(matrix, scores_by, out / "lid_vs_reduction.png")
    print(json.dumps({k: v["pooled"] for k, v in checks.items()}, indent=1))


def scatter(matrix, scores_by: dict, path: Path) -> None:
    """Each scorer's score against the measured CER reduction, one point per (target, source)."""
    from matplotlib.figure import Figure

    from mtransfer.plots import save_figure

    fig = Figure(figsize=(4.2 * len(scores_by), 3.6))
    for i, (scorer, by_target) in enumerate(scores_by.items()):
        ax = fig.add_subplot(1, len(scores_by), i + 1)
        for target in matrix.settings.targets:
            reduction = matrix.reduction(target)
            pts = [(by_target[target][s], r) for s, r in reduction.items()]
            if pts:
                ax.scatter(*zip(*pts), label=target, s=18)
        ax.set_xlabel(f"{scorer} score (higher: closer source)")
        ax.set_ylabel("CER reduction over random init")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
