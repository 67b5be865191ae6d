"""How long `mtransfer --help` takes, against a bare Python start measured in the same run.

    .venv/bin/python scripts/bench_cli_startup.py [--repeats 5]

The package loads its public names on first use and the CLI imports heavy modules inside its
verbs, so `--help` starts no torch or transformers (target: under 1 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def best_of(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    cli = str(Path(sys.executable).with_name("mtransfer"))
    bare = best_of([sys.executable, "-c", "pass"], a.repeats)
    helps = {verb: best_of([cli, *verb.split(), "--help"], a.repeats) for verb in ("", "train", "rank-models")}
    print(f"bare python start: {bare:.3f}s")
    for verb, seconds in helps.items():
        print(f"mtransfer {verb + ' ' if verb else ''}--help: {seconds:.3f}s  ({seconds / bare:.1f}x a bare start; "
              f"target < 1 s: {'ok' if seconds < 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
