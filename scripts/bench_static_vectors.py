"""Large static vectors: load time cold and warm, and peak memory while a frozen head trains.

Generates a 1,000,000-word x 300-dim vectors file (word2vec binary by default, ``--text`` for
a GloVe-style text file; the first words are the fortunes' own vocabulary so a real task maps
onto it), then, each in a fresh process:

* cold: parse the file, convert it to gensim's native format, build the adapter (vocabulary
  restricted to the training words + budget) and train a frozen head for a few epochs;
* warm: the same, the native copy now memory-mapped.

Reports load times and peak memory growth over the process's baseline against the matrix
size (target: under 2x the matrix).

    .venv/bin/python scripts/bench_static_vectors.py [--words 1000000] [--dim 300] [--text]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def generate(path: Path, words: int, dim: int, text: bool) -> None:
    import numpy as np
    import regex

    from mtransfer.adapters.static_vectors import TOKEN_PATTERN
    from mtransfer.builtins.corpora import fortunes_corpus

    pattern = regex.compile(TOKEN_PATTERN)
    real = list(dict.fromkeys(t for s in fortunes_corpus() for t in pattern.findall(s.lower())))[:words]
    vocab = real + [f"w{i}" for i in range(words - len(real))]
    rng = np.random.default_rng(0)
    chunk = 50_000
    with open(path, "wb") as fh:
        if not text:
            fh.write(f"{words} {dim}\n".encode())
        for start in range(0, words, chunk):
            block = rng.standard_normal((min(chunk, words - start), dim), dtype=np.float32)
            for w, v in zip(vocab[start:start + chunk], block):
                if text:
                    fh.write((w + " " + " ".join(f"{x:.4f}" for x in v) + "\n").encode())
                else:
                    fh.write(w.encode() + b" " + v.tobytes() + b"\n")


def child(path: str, cache: str) -> None:
    os.environ["MTRANSFER_CACHE"] = cache
    import mtransfer as mt
    from mtransfer.adapters.static_vectors import load_vectors
    from mtransfer.builtins.corpora import fortunes_splits

    splits = fortunes_splits()
    train = mt.load_labeled(splits["train"])
    base = rss_mib()
    start = time.perf_counter()
    kv = load_vectors(path)
    load_s = time.perf_counter() - start
    shape = kv.vectors.shape
    del kv
    model = mt.TransferModel.from_backbone("static_vectors", path, labels=train.label_names, seed=0,
                                           vocab_texts=train.inputs, vocab_budget=20_000)
    with tempfile.TemporaryDirectory() as out:
        args = mt.TrainingArguments(output_dir=out, strategy="frozen", num_epochs=5, learning_rate=3e-2,
                                    progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                    cache_dir=os.path.join(cache, "features"))
        mt.Trainer(model, args, train).train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_seconds": load_s, "words": shape[0], "dim": shape[1], "rss_base_mib": base,
                      "rss_peak_mib": peak, "vocab_rows": len(model.adapter.vocabulary)}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--words", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--text", action="store_true", help="a GloVe-style text file instead of word2vec binary")
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return 0
    matrix_mib = a.words * a.dim * 4 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("vectors.txt" if a.text else "vectors.bin")
        start = time.perf_counter()
        generate(path, a.words, a.dim, a.text)
        print(f"generated {path.name}: {a.words:,} x {a.dim} ({path.stat().st_size / 2**20:.0f} MiB on disk, "
              f"matrix {matrix_mib:.0f} MiB) in {time.perf_counter() - start:.0f}s", flush=True)
        figures = {"matrix_mib": matrix_mib}
        for run in ("cold", "warm"):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), str(Path(tmp) / "cache")],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            growth = r["rss_peak_mib"] - r["rss_base_mib"]
            figures[run] = {**r, "growth_mib": growth, "growth_over_matrix": growth / matrix_mib}
            print(f"{run}: load {r['load_seconds']:.2f}s; peak memory {r['rss_peak_mib']:.0f} MiB "
                  f"(+{growth:.0f} MiB over the {r['rss_base_mib']:.0f} MiB baseline = {growth / matrix_mib:.2f}x the matrix; "
                  f"target < 2x); embedding rows kept: {r['vocab_rows']:,}", flush=True)
    print(f"\nwarm load is {figures['cold']['load_seconds'] / max(figures['warm']['load_seconds'], 1e-9):.0f}x faster than cold")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
