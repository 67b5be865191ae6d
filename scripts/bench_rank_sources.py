"""What each language-ID source scorer costs: rank-sources on the transfer matrix's data, one scorer at a time.

The matrix's own inputs (its default 6 sources x 200 training utterances, seed 0's subsets, and its 5
targets x 30 utterances; the espeak-ng corpus is built into the cache on first use), ranked by each
scorer in turn in this one process, with ``--threads`` torch / BLAS threads. Reports each scorer's
seconds (features, classifiers with the held-out accuracy, bootstrap intervals: the whole call),
its source-ID accuracy and its top source per target. Run on an idle machine for figures to quote:

    .venv/bin/python scripts/bench_rank_sources.py [--scorers mfcc,mfcc-frames,fbank] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch
    from threadpoolctl import threadpool_limits

    from mtransfer.experiments.transfer_matrix import Cell, MatrixSettings, _datasets_rows, espeak_corpus
    from mtransfer.ranking import rank_sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scorers", default="mfcc,mfcc-frames,fbank")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-language", type=int, default=400)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    settings = MatrixSettings()
    corpus = espeak_corpus(settings.languages, a.per_language)
    rows = lambda kind, lang, n: [r["audio"] for r in _datasets_rows(Cell(kind, lang, "random", 0, n), corpus)[0]]  # noqa: E731
    sources = {s: rows("source", s, settings.source_utterances) for s in settings.sources}
    targets = {t: rows("scratch", t, settings.target_utterances) for t in settings.targets}
    torch.set_num_threads(a.threads)
    figures = {"threads": a.threads, "sources": {s: len(v) for s, v in sources.items()},
               "targets": {t: len(v) for t, v in targets.items()}, "scorers": {}}
    for scorer in [s.strip() for s in a.scorers.split(",") if s.strip()]:
        began = time.perf_counter()
        with threadpool_limits(a.threads):
            scores = rank_sources(sources, targets, backbone=scorer, bootstrap=200)
        seconds = time.perf_counter() - began
        figures["scorers"][scorer] = {"seconds": round(seconds, 1), "lid_accuracy": round(scores.lid_accuracy, 3),
                                      "top_source": {r.target: r.ranking[0]["source"] for r in scores.rankings}}
        print(f"{scorer:12s} {seconds:7.1f} s  source-ID accuracy {scores.lid_accuracy:.3f}  top: "
              + ", ".join(f"{t}->{s}" for t, s in figures["scorers"][scorer]["top_source"].items()), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
