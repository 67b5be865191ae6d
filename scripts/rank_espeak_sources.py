"""The lecture's table, offline: rank source languages for target languages on the espeak-ng corpus.

Sources {bn, hi, tr, ru, de}; targets {as, mr, ne, pt, it, es}. Prints the target x source
matrix of average language-ID posteriors for the fbank baseline and, with --backbone, for a
speech encoder (a Hub id or a saved folder, e.g. a tiny random wav2vec2 for a smoke run).

    python scripts/rank_espeak_sources.py --out outputs/espeak_ranking [--backbone /path/to/wav2vec2]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtransfer.ranking import rank_sources  # noqa: E402
from mtransfer.builtins.speech_corpus import build_speech_corpus  # noqa: E402

SOURCES = ["bn", "hi", "tr", "ru", "de"]
TARGETS = ["as", "mr", "ne", "pt", "it", "es"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/espeak_ranking")
    p.add_argument("--corpus", default=None, help="corpus folder (default: OUT/corpus; built or completed)")
    p.add_argument("--per-language", type=int, default=80)
    p.add_argument("--backbone", action="append", default=[], help="also rank with this speech encoder (repeatable)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    root = build_speech_corpus(a.corpus or out / "corpus", SOURCES + TARGETS, per_language=a.per_language, speakers=4, workers=2)
    by_language: dict[str, list[str]] = {}
    with open(root / "metadata.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_language.setdefault(row["language"], []).append(str(root / row["file_name"]))
    print(f"corpus: {sum(map(len, by_language.values()))} utterances ({time.perf_counter() - start:.0f}s)")
    for backbone in ["fbank", *a.backbone]:
        start = time.perf_counter()
        scores = rank_sources({k: by_language[k] for k in SOURCES}, {k: by_language[k] for k in TARGETS}, backbone=backbone)
        tag = "fbank" if backbone == "fbank" else Path(backbone).name
        scores.to_json(out / f"{tag}.json")
        scores.plot(out / f"{tag}.png")
        print(f"\n{backbone} (source classifier held-out accuracy {scores.lid_accuracy:.3f}, {time.perf_counter() - start:.0f}s)")
        print(scores.table())


if __name__ == "__main__":
    main()
