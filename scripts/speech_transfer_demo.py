"""Cross-lingual transfer for speech recognition on offline espeak-ng speech: one script, one table.

(a) a small CTC model (w2v-BERT preset) trained from scratch on the source language (Hindi);
(b) that model with a new CTC head, fine-tuned on 10% of the target language's training data (Marathi);
(c) the same architecture from random initialisation on the same 10%, trained until its validation CER stops
    improving. Test speakers are never heard in training. Writes results.json / results.md and prints the table.

    .venv/bin/python scripts/speech_transfer_demo.py [--output-dir outputs/speech_demo] [--source hi] [--target mr]
"""

from __future__ import annotations

import argparse
import json

from mtransfer.experiments.speech_demo import results_table, run_speech_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-dir", default="outputs/speech_demo")
    ap.add_argument("--source", default="hi")
    ap.add_argument("--target", default="mr")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--model", default="builtin:w2v-bert-small")
    ap.add_argument("--source-epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch-patience", type=int, default=20,
                    help="epochs without a better validation CER that end the random-init target run")
    ap.add_argument("--only", default="source,transfer,scratch",
                    help="runs to (re)do; the others keep their results from OUTPUT_DIR/results.json")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args()
    runs = run_speech_demo(a.output_dir, source=a.source, target=a.target, fraction=a.fraction, model=a.model,
                           source_epochs=a.source_epochs, seed=a.seed, scratch_patience=a.scratch_patience,
                           progress_bar=not a.no_progress,
                           only=a.only.split(","))
    print(results_table(runs))
    for r in runs:
        print(json.dumps({"run": r.name, "examples": r.results["examples"][:2]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
