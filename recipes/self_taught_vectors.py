"""Self-taught transfer for text: word2vec on unlabelled fortunes, transferred to topic classification.

    .venv/bin/python recipes/self_taught_vectors.py [--output-dir outputs/self_taught] [--seed 0]

Trains word2vec (gensim) on every English fortune except the labelled task's validation and
test texts, then fine-tunes the same static-vector classifier (two-stage: head, then vectors)
from random vectors and from the self-taught ones, and compares both with a frozen
sentence-transformers encoder. The experiment lives in mtransfer.experiments.self_taught_comparison.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtransfer.experiments.self_taught_comparison import compare_self_taught  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/self_taught")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs (half of them head-only)")
    p.add_argument("--vector-size", type=int, default=100)
    a = p.parse_args()
    compare_self_taught(a.output_dir, seed=a.seed, epochs=a.epochs, vector_size=a.vector_size, progress_bar=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
