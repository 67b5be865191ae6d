"""LogME speed: 10,000 x 768 features, 10 classes (target: under 2 s), against a direct implementation.

The baseline, measured in the same run, follows the paper literally: per class, each fixed-point
iteration solves ``(alpha I + beta F^T F) m = beta F^T y`` (one 768 x 768 solve per iteration).
mtransfer's version does one eigendecomposition for all classes and iterations.

    python scripts/bench_logme.py [--n 10000 --d 768 --classes 10 --repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtransfer.ranking import logme  # noqa: E402


def direct_logme(f: np.ndarray, y: np.ndarray, iters: int = 100, tol: float = 1e-6) -> float:
    n, d = f.shape
    ftf = f.T @ f
    eig = np.linalg.eigvalsh(ftf)
    out = []
    for k in range(int(y.max()) + 1):
        t_y = (y == k).astype(np.float64)
        fty = f.T @ t_y
        alpha, beta = 1.0, 1.0
        for _ in range(iters):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, fty)
            gamma = (beta * eig / (alpha + beta * eig)).sum()
            res = ((f @ m - t_y) ** 2).sum()
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / res
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, fty)
        res = ((f @ m - t_y) ** 2).sum()
        out.append((n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * res
                    - alpha / 2 * (m @ m) - np.linalg.slogdet(a)[1] / 2) / n)
    return float(np.mean(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, a.classes, a.n)
    f = (rng.normal(size=(a.n, a.d)) + 0.5 * np.eye(a.classes, a.d)[y] * 4).astype(np.float32)
    ours, direct = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        v1 = logme(f, y)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        v2 = direct_logme(f.astype(np.float64), y)
        direct.append(time.perf_counter() - t)
    print(f"LogME {a.n} x {a.d}, {a.classes} classes: mtransfer {min(ours):.2f} s (target < 2 s), "
          f"direct per-iteration solves {min(direct):.2f} s, ratio {min(direct) / min(ours):.1f}x; "
          f"values {v1:.6f} vs {v2:.6f} (|diff| {abs(v1 - v2):.1e})")


if __name__ == "__main__":
    main()
