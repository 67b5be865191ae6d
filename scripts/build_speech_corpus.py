"""Build the offline multilingual speech corpus (gettext catalogs -> espeak-ng -> 16 kHz wav).

    python scripts/build_speech_corpus.py --out data/speech --per-language 200
    python scripts/build_speech_corpus.py --out data/as_bn --languages as bn --per-language 40 --speakers 3

The folder loads with ``datasets.load_dataset("audiofolder", data_dir=OUT)`` or
``mtransfer.load_labeled(OUT, input_column="audio", label_column="language")``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtransfer.builtins.speech_corpus import DEFAULT_LANGUAGES, build_speech_corpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (an audiofolder with metadata.csv)")
    p.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES), help="gettext language codes")
    p.add_argument("--per-language", type=int, default=200, help="utterances per language")
    p.add_argument("--speakers", type=int, default=4, help="pseudo-speakers (voice variant, pitch, speed) per language")
    p.add_argument("--test-speakers", type=int, default=1, help="speakers held out as the test split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=4)
    a = p.parse_args()
    start = time.perf_counter()
    out = build_speech_corpus(a.out, a.languages, a.per_language, a.speakers, a.test_speakers, a.seed, a.workers)
    n = sum(1 for _ in (out / "metadata.csv").open()) - 1
    print(f"{out}: {n} utterances in {len(a.languages)} languages ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
