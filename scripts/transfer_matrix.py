"""The source-language transfer matrix on synthetic speech, and how well each source ranker predicted it.

Runs (or resumes) mtransfer.experiments.transfer_matrix.run_transfer_matrix, then ranks the sources for every
target with each ranker and checks each ranking against the measured CER reductions (Kendall tau,
Spearman rho, top-1 hit, regret; pooled over targets with bootstrap intervals):

- language-ID scorers on the audio: ``mfcc`` (utterance statistics, the default), ``mfcc-frames``
  (frame-level posteriors, the lecture's version), ``fbank`` (log-mel statistics, the old default);
- ``pooled-model``: a language-ID classifier on the features of the model the matrix trained on all
  sources pooled (the "acoustic model" features);
- model-based, on the matrix's own source models (seed 0's) and each target's small-budget data
  (:mod:`mtransfer.ranking.source_models`): ``head-probe`` (a new CTC head on each frozen source
  encoder, a few epochs on cached target frames, its validation CER), ``zero-shot`` (each source
  model's own transcripts of the target), ``quality`` (each source's own validation CER), and
  ``mfcc+head-probe`` (the mean of the two rankings);
- ``uriel``: typological similarity from lang2vec's data (offline);
- ``random``.

The scorers see what a user has: each source's large-budget training audio and each target's
small-budget audio (seed 0's subset). Writes into --output-dir: matrix.json / matrix.md (CER and
WER tables) / matrix.png, lid_<ranker>.json and lid_<ranker>.png (posterior tables and heatmaps),
rankers.json and rankers.md, lid_vs_reduction.png (score against CER reduction) and timings.json
(where the time went). From the repository root, on 2 CPU cores (~45 minutes at the defaults):

    .venv/bin/python scripts/transfer_matrix.py --workers 2 --output-dir outputs/matrix

On several GPUs, one worker per GPU (``--workers`` = GPUs), or as launched processes:

    accelerate launch --num_processes 4 scripts/transfer_matrix.py --output-dir outputs/matrix

Launched processes do not shard a run: each trains whole cells on its own device (a lock file
claims a cell; transfer cells wait for their source model), and process 0 writes the outputs. A
reduced configuration for a quick look:

    .venv/bin/python scripts/transfer_matrix.py --sources bn hi de --targets as mr --seeds 0 1 \\
        --source-utterances 100 --source-epochs 8 --workers 2 --output-dir /tmp/matrix-small

The same check on a second, independent corpus (Festival's voices built from human recordings, texts
the espeak corpus does not use; ``bash scripts/setup.sh --festival`` installs them):

    .venv/bin/python scripts/transfer_matrix.py --synthesizer festival --sources hi te ru cs ca fi \\
        --targets mr it --workers 2 --output-dir outputs/matrix-festival

On a scheduler (a Slurm job array, a Ray task or a Kubernetes indexed job per cell), with the same
settings in every call: ``--list-cells`` prints the cells in dependency order (index, name, the
cell it starts from), ``--cell I`` (or ``--cell NAME``) trains exactly that one (``--wait S``: wait
up to S seconds for its source model or for another task holding it; without it such a cell is
refused), and a last call without ``--cell`` writes the tables from the finished cells (training
whatever is missing). See the README's "Several processes" for a Slurm array script.
"""

from __future__ import annotations

import os
import sys

DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def launched_process() -> tuple[int, int] | None:
    """(rank, processes) under ``accelerate launch`` / torchrun with several processes; the process is then made
    a plain single-device worker: its GPU is its local rank, and no process group is formed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if "torch" not in sys.modules:  # before CUDA starts: this process sees its own GPU only
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", str(local))
    for name in DISTRIBUTED_ENV:
        os.environ.pop(name, None)
    return rank, world


LAUNCHED = launched_process()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

LID_SCORERS = ("mfcc", "mfcc-frames", "fbank")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mtransfer.experiments.transfer_matrix import MatrixSettings

    d = MatrixSettings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="+", default=list(d.sources))
    ap.add_argument("--targets", nargs="+", default=list(d.targets))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds))
    ap.add_argument("--units", choices=["characters", "phones"], default=d.units)
    ap.add_argument("--model", default=d.model)
    for name in ("source_utterances", "target_utterances", "target_validation", "source_epochs", "target_epochs",
                 "scratch_epochs", "source_patience", "patience", "scratch_patience", "min_epochs", "batch_size"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("source_lr", "target_lr", "scratch_lr"):
        ap.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    ap.add_argument("--no-ceiling", action="store_true", help="skip the large-budget target runs")
    ap.add_argument("--no-pooled", action="store_true", help="skip the all-sources model (and its ranker)")
    ap.add_argument("--ctc-plateau", type=float, default=d.ctc_plateau,
                    help="share of the reference characters below which an epoch is on the all-blank plateau (never a "
                         "run's best; patience starts after it); 0: off, as the matrices measured before the rule")
    ap.add_argument("--no-group-by-length", action="store_true",
                    help="shuffled training batches instead of batches of utterances of similar length (the matrices "
                         "measured before length grouping)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes training cells side by side (0: one per GPU, else one per CPU core, at most 8)")
    ap.add_argument("--synthesizer", choices=["espeak", "festival"], default=d.synthesizer,
                    help="the corpus: espeak-ng (the published matrix) or Festival (a second, independent corpus: "
                         "voices from human recordings, other texts; needs bash scripts/setup.sh --festival)")
    ap.add_argument("--per-language", type=int, default=None,
                    help="utterances per language in the corpus (6 train / 1 validation / 1 test speakers; "
                         "default 400 for espeak, 360 for festival)")
    ap.add_argument("--num-threads", type=int, default=None,
                    help="torch threads per worker (or per --cell run); default: the cores shared out among the workers")
    ap.add_argument("--list-cells", action="store_true",
                    help="print the cells in dependency order (index, name, the cell it starts from) and exit")
    ap.add_argument("--cell", default=None, metavar="INDEX|NAME",
                    help="train exactly this cell (an index or a name from --list-cells), e.g. as one task of a job array")
    ap.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                    help="with --cell: wait this long for the cell's source model (or another task holding the cell)")
    ap.add_argument("--output-dir", default="outputs/matrix")
    ap.add_argument("--progress", action="store_true")
    return ap.parse_args(argv)


def settings_of(a: argparse.Namespace):
    from mtransfer.experiments.transfer_matrix import MatrixSettings

    return MatrixSettings(sources=a.sources, targets=a.targets, seeds=a.seeds, units=a.units, model=a.model,
                          source_utterances=a.source_utterances, target_utterances=a.target_utterances,
                          target_validation=a.target_validation,
                          source_epochs=a.source_epochs, target_epochs=a.target_epochs,
                          scratch_epochs=a.scratch_epochs, source_lr=a.source_lr, target_lr=a.target_lr,
                          scratch_lr=a.scratch_lr, source_patience=a.source_patience, patience=a.patience,
                          scratch_patience=a.scratch_patience, min_epochs=a.min_epochs, batch_size=a.batch_size,
                          group_by_length=not a.no_group_by_length,
                          ctc_plateau=a.ctc_plateau or None, synthesizer=a.synthesizer,
                          ceiling=not a.no_ceiling, pooled=not a.no_pooled and a.units == "characters")


def default_workers() -> int:
    import torch

    if torch.cuda.device_count():
        return torch.cuda.device_count()
    return max(1, min(8, os.cpu_count() or 1))


def corpus_of(settings, per_language: int | None, build: bool = True):
    """The settings' synthesizer's corpus of their languages (built into the cache on first use)."""
    from mtransfer.experiments.transfer_matrix import SYNTHESIZERS

    size = {} if per_language is None else {"per_language": per_language}
    return SYNTHESIZERS[settings.synthesizer](settings.languages, build=build, **size)


def list_cells(settings) -> None:
    from mtransfer.experiments.transfer_matrix import plan_cells

    for i, cell in enumerate(plan_cells(settings)):
        print(f"{i}\t{cell.name}\t{cell.needs.name if cell.needs is not None else '-'}")


def one_cell(a: argparse.Namespace, settings, out: Path) -> None:
    """``--cell``: one cell, as one task of a scheduler's array."""
    from mtransfer.experiments.transfer_matrix import check_settings, find_cell, run_cell

    if LAUNCHED is not None:
        raise ValueError("--cell trains one cell in one process; run it without accelerate launch / torchrun.")
    cell = find_cell(settings, a.cell)  # an unknown cell stops here, before the folder or the corpus
    check_settings(settings, out)
    corpus = corpus_of(settings, a.per_language)
    if run_cell(settings, out, corpus, a.cell, wait=a.wait, progress=a.progress, num_threads=a.num_threads) == "done":
        print(f"{cell.name}: already trained in {out}")


def main(argv: list[str] | None = None) -> None:
    from mtransfer.experiments.transfer_matrix import check_settings, run_transfer_matrix, work_cells

    a = parse_args(argv)
    settings = settings_of(a)  # bad settings stop here, before the corpus or any training
    if a.list_cells:
        return list_cells(settings)
    out = Path(a.output_dir)
    if a.cell is not None:
        return one_cell(a, settings, out)
    check_settings(settings, out)  # so does a folder trained with other settings
    began = time.perf_counter()
    timings: dict[str, float] = {}
    if LAUNCHED is not None:
        rank, world = LAUNCHED
        corpus = corpus_of(settings, a.per_language, build=rank == 0)
        timings["corpus_s"] = time.perf_counter() - began
        threads = a.num_threads or max(1, (os.cpu_count() or 1) // world)
        work_cells(settings, out, corpus, progress=a.progress, num_threads=threads, worker=f"[process {rank}] ")
        if rank != 0:
            return
        workers = world
    else:
        corpus = corpus_of(settings, a.per_language)
        timings["corpus_s"] = time.perf_counter() - began
        workers = a.workers or default_workers()
    t = time.perf_counter()
    matrix = run_transfer_matrix(settings, out, corpus=corpus, workers=workers if LAUNCHED is None else 1,
                                 progress=a.progress, num_threads=a.num_threads)
    timings["matrix_s"] = time.perf_counter() - t
    print(matrix.table())
    t = time.perf_counter()
    checks, scores_by = rank_and_check(matrix, settings, corpus, out, timings, workers)
    timings["rankers_s"] = time.perf_counter() - t
    write_rankers(checks, out)
    scatter(matrix, scores_by, out / "lid_vs_reduction.png")
    helps = matrix.pretraining_helps()
    train_by_kind: dict[str, float] = {}
    for c in matrix.cells:
        train_by_kind[c.kind] = train_by_kind.get(c.kind, 0.0) + float(c.results.get("train_seconds", 0.0))
    timings["total_s"] = time.perf_counter() - began
    summary = {"timings_s": {k: round(v, 1) for k, v in timings.items()},
               "train_seconds_by_kind": {k: round(v, 1) for k, v in train_by_kind.items()},
               "runs": len(matrix.cells), "workers": workers, "pretraining_helps": helps}
    from mtransfer.atomic import atomic_write_json

    atomic_write_json(out / "timings.json", summary)
    print(json.dumps({"pooled": {k: v["pooled"] for k, v in checks.items()}, **summary}, indent=1))


def rank_and_check(matrix, settings, corpus, out: Path, timings: dict[str, float],
                   workers: int = 1) -> tuple[dict, dict]:
    """Every ranker's scores (target -> source -> score) and its check against the matrix; the audio scorers
    run side by side in ``workers`` processes, slowest first."""
    import numpy as np

    from mtransfer.ranking.source_models import combine
    from mtransfer.ranking.typology import uriel_similarity
    from mtransfer.experiments.transfer_matrix import Cell, _datasets_rows, pooled_model_path, source_model_scores

    first = settings.seeds[0]
    sources = {s: [r["audio"] for r in _datasets_rows(Cell("source", s, "random", first, settings.source_utterances),
                                                      corpus)[0]] for s in settings.sources}
    targets = {t: [r["audio"] for r in _datasets_rows(Cell("scratch", t, "random", first, settings.target_utterances),
                                                      corpus)[0]] for t in settings.targets}
    names = ["mfcc-frames", *(["pooled-model"] if settings.pooled else []), "fbank", "mfcc"]  # slowest first
    pooled = str(pooled_model_path(out, settings)) if settings.pooled else None
    jobs = [(name, sources, targets, str(out), pooled, max(1, (os.cpu_count() or 1) // workers)) for name in names]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(score_with, *zip(*jobs)))
    else:
        results = [score_with(*job) for job in jobs]
    checks, scores_by = {}, {}
    for name, by_target, accuracy, seconds in sorted(results, key=lambda r: [*LID_SCORERS, "pooled-model"].index(r[0])):
        timings[f"ranker_{name}_s"] = seconds
        scores_by[name] = by_target
        checks[name] = {"lid_accuracy": accuracy, **matrix.check_ranker(by_target)}
    model_based, model_seconds = source_model_scores(settings, out, corpus,
                                                     num_threads=max(1, (os.cpu_count() or 1) // max(1, workers)))
    for method, by_target in model_based.items():
        name = {"head": "head-probe"}.get(method, method)
        timings[f"ranker_{name}_s"] = round(model_seconds[method], 1)
        scores_by[name] = by_target
        checks[name] = matrix.check_ranker(by_target)
    lid = scores_by["mfcc"]
    scores_by["mfcc+head-probe"] = {t: combine(lid[t], scores_by["head-probe"][t]) for t in settings.targets}
    checks["mfcc+head-probe"] = matrix.check_ranker(scores_by["mfcc+head-probe"])
    scores_by["uriel"] = uriel_similarity(settings.sources, settings.targets)
    checks["uriel"] = matrix.check_ranker(scores_by["uriel"])
    rng = np.random.default_rng(0)
    checks["random"] = matrix.check_ranker({t: {s: float(rng.random()) for s in settings.sources}
                                            for t in settings.targets})
    return checks, scores_by


def score_with(name: str, sources: dict, targets: dict, out: str, pooled: str | None,
               threads: int) -> tuple[str, dict, float | None, float]:
    """One ranker's language-ID scores, written as lid_<name>.json / .png: (name, target -> source -> score,
    source-ID accuracy, seconds)."""
    import torch
    from threadpoolctl import threadpool_limits

    from mtransfer.ranking import rank_sources

    torch.set_num_threads(threads)
    began = time.perf_counter()
    if name == "pooled-model":
        import mtransfer as mt

        backbone = mt.TransferModel.from_pretrained(pooled).adapter
    else:
        backbone = name
    with threadpool_limits(threads):
        scores = rank_sources(sources, targets, backbone=backbone, bootstrap=200)
    scores.to_json(Path(out) / f"lid_{name}.json")
    scores.plot(Path(out) / f"lid_{name}.png")
    by_target = {r.target: dict(zip(r.sources, map(float, r.scores))) for r in scores.rankings}
    return name, by_target, scores.lid_accuracy, time.perf_counter() - began


def write_rankers(checks: dict, out: Path) -> None:
    from mtransfer.atomic import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "rankers.json", checks)
    lines = ["| ranker | Kendall tau | Spearman rho | top-1 hits | regret (CER) | source-ID accuracy |",
             "|---|---|---|---|---|---|"]
    for name, check in checks.items():
        pooled = check["pooled"]
        cell = lambda key: (f"{pooled[key]['mean']:.2f} [{pooled[key]['ci'][0]:.2f}, {pooled[key]['ci'][1]:.2f}]"  # noqa: E731
                            if key in pooled else "—")
        hits = sum(r["top1_hit"] is True for r in check["per_target"].values())
        ties = sum(r["top1_hit"] == "tie" for r in check["per_target"].values())  # the best tied with others: no pick
        accuracy = f"{check['lid_accuracy']:.2f}" if check.get("lid_accuracy") is not None else "—"
        hit_text = f"{hits}/{len(check['per_target'])}" + (f" (+{ties} tied)" if ties else "")
        lines.append(f"| {name} | {cell('kendall_tau')} | {cell('spearman_rho')} | {hit_text} | "
                     f"{cell('regret')} | {accuracy} |")
    atomic_write_bytes(out / "rankers.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def scatter(matrix, scores_by: dict, path: Path) -> None:
    """Each ranker's score against the measured CER reduction, one point per (target, source)."""
    from matplotlib.figure import Figure

    from mtransfer.plots import save_figure

    fig = Figure(figsize=(4.2 * len(scores_by), 3.6))
    for i, (scorer, by_target) in enumerate(scores_by.items()):
        ax = fig.add_subplot(1, len(scores_by), i + 1)
        for target in matrix.settings.targets:
            reduction = matrix.reduction(target)
            pts = [(by_target[target][s], r) for s, r in reduction.items() if s in by_target.get(target, {})]
            if pts:
                ax.scatter(*zip(*pts), label=target, s=18)
        ax.set_xlabel(f"{scorer} score (higher: closer source)")
        ax.set_ylabel("CER reduction over random init")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, TimeoutError) as err:  # bad settings, a folder trained under others, a
        # --cell whose source model is missing: one line
        print(f"transfer_matrix.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
