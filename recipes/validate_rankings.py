"""Do transferability estimators predict fine-tuning results? A real, offline check.

Candidates: the real MiniLM-L6 weights read four ways (sentence-transformers pipeline, mean
pooling, CLS pooling, random init of the same architecture) and gensim's real GloVe test
vectors. Target: Debian fortunes topics (5 classes, 48 labelled texts each). Each candidate is
scored by LogME, H-score and kNN accuracy on the training texts, then trained with the same
short budget (a frozen probe on cached features) and evaluated on the test texts; the report
gives Kendall's tau, Spearman's rho and top-1 hit per estimator.

    python recipes/validate_rankings.py --output-dir outputs/validate_rankings
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mtransfer as mt  # noqa: E402
from mtransfer.builtins.corpora import fortunes_splits  # noqa: E402
from mtransfer.builtins import minilm_path  # noqa: E402
from mtransfer.experiments.validate_rankings import validate_rankings  # noqa: E402
from mtransfer.ranking import Candidate  # noqa: E402


def candidates() -> list[Candidate]:
    from gensim.test.utils import datapath

    minilm = minilm_path()
    return [
        Candidate("minilm-sentence", "sentence", minilm),
        Candidate("minilm-mean", "text", minilm, {"pooling": "mean", "max_length": 96}),
        Candidate("minilm-cls", "text", minilm, {"pooling": "cls", "max_length": 96}),
        Candidate("minilm-random-init", "text", minilm, {"pooling": "mean", "max_length": 96, "pretrained": False}),
        Candidate("glove-test-vectors", "static_vectors", datapath("test_glove.txt"), {"pooling": "mean"}),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="outputs/validate_rankings")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    splits = fortunes_splits(seed=a.seed)
    train = mt.load_labeled(splits["train"])
    test = mt.load_labeled(splits["test"], label_names=train.label_names)
    found = []
    for c in candidates():
        if c.modality == "static_vectors":
            c.adapter["vocab_texts"] = train.inputs
        found.append(c)
    report = validate_rankings(found, train, test, output_dir=a.output_dir,
                               training={"num_epochs": a.epochs, "learning_rate": 1e-2, "seed": a.seed}, seed=a.seed)
    print(report.table())
    print(f"report: {Path(a.output_dir) / 'report.json'}, plot: {Path(a.output_dir) / 'agreement.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
