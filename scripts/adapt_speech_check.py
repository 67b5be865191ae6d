"""Check the one-command procedure (mtransfer adapt-speech) against a measured transfer matrix.

For each target given, adapt_from_best_source ranks the matrix's sources on the target's small
training set (the same corpus, the same small budget and seed as the matrix's seed-0 cell), trains
on the top-ranked source, adapts, and trains the random-init baseline. The script then says whether
the pick is the matrix's best source for that target or within its spread (the best source's
mean + its sample standard deviation over seeds), and writes check.json beside the runs. Run after
scripts/transfer_matrix.py, from the repository root:

    .venv/bin/python scripts/adapt_speech_check.py --matrix-dir outputs/matrix --targets as pt \
        --output-dir outputs/adapt-check
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def one_target(matrix_dir: str, target: str, out: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from mtransfer.experiments.transfer_matrix import TransferMatrix, espeak_corpus
    from mtransfer.experiments.source_choice import adapt_from_best_source

    matrix = TransferMatrix.load(matrix_dir)
    s = matrix.settings
    corpus = espeak_corpus(s.languages)
    splits = lambda lang: {k: [{"audio": r["audio"], "transcript": r["transcript"]} for r in rows]  # noqa: E731
                           for k, rows in corpus(lang).items()}
    report = adapt_from_best_source(
        {src: splits(src) for src in s.sources}, splits(target), Path(out) / target, model=s.model,
        target_utterances=s.target_utterances, source_epochs=s.source_epochs, target_epochs=s.target_epochs,
        scratch_epochs=s.scratch_epochs, source_lr=s.source_lr, target_lr=s.target_lr, scratch_lr=s.scratch_lr,
        source_patience=s.source_patience, patience=s.patience, scratch_patience=s.scratch_patience,
        batch_size=s.batch_size, seed=s.seeds[0], log=None)
    means = {src: (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0)
             for src in s.sources if len(v := matrix.runs("transfer", target, src))}
    best = min(means, key=lambda src: means[src][0])
    pick = report["source"]
    return {"target": target, "picked": pick, "matrix_best": best,
            "picked_matrix_cer": round(float(means[pick][0]), 4),
            "best_matrix_cer": round(float(means[best][0]), 4), "best_matrix_sd": round(float(means[best][1]), 4),
            "within_spread": bool(means[pick][0] <= means[best][0] + means[best][1]),
            "adapted_cer": report["target_results"]["test_cer"], "random_init_cer": report["baseline_results"]["test_cer"],
            "ranking": report["ranking"]}


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix-dir", required=True)
    ap.add_argument("--targets", nargs="+", required=True)
    ap.add_argument("--output-dir", default="outputs/adapt-check")
    a = ap.parse_args()
    workers = max(1, min(len(a.targets), os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(one_target, [a.matrix_dir] * len(a.targets), a.targets, [a.output_dir] * len(a.targets),
                             [threads] * len(a.targets)))
    from mtransfer.atomic import atomic_write_json

    atomic_write_json(Path(a.output_dir) / "check.json", rows)
    for r in rows:
        print(f"{r['target']}: picked {r['picked']} (matrix CER {r['picked_matrix_cer']:.3f}); matrix best "
              f"{r['matrix_best']} ({r['best_matrix_cer']:.3f} ± {r['best_matrix_sd']:.3f}); within spread: "
              f"{r['within_spread']}; adapted CER {r['adapted_cer']:.3f} vs random init {r['random_init_cer']:.3f}")
    print(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
