"""Learning-rate schedules as plain multiplier functions of progress.

Every schedule maps ``(step, total_steps)`` to a multiplier in ``[0, 1]`` of the peak
learning rate. The trainer composes them with the strategy plan (``strategies.py``), which
decides, for each layer group, the peak learning rate and whether it trains at all.
"""

from __future__ import annotations

import math
from typing import Callable

ScheduleFn = Callable[[int, int], float]

SCHEDULES = ("constant", "linear", "cosine", "slanted_triangular")


def constant(step: int, total_steps: int, *, warmup_steps: int = 0) -> float:
    """Linear warmup over ``warmup_steps``, then a constant multiplier of 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


def linear(step: int, total_steps: int, *, warmup_steps: int = 0) -> float:
    """Linear warmup, then linear decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    return max(0.0, (total_steps - step) / remaining)


def cosine(step: int, total_steps: int, *, warmup_steps: int = 0) -> float:
    """Linear warmup, then half-cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def slanted_triangular(step: int, total_steps: int, *, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """Slanted triangular learning rate (Howard and Ruder, ULMFiT, 2018, eq. 3).

    A short linear increase over the first ``cut_frac`` of the steps, then a long linear
    decay. The multiplier goes from ``1/ratio`` up to 1 and back down to ``1/ratio``.

    >>> round(slanted_triangular(0, 100), 4), slanted_triangular(10, 100)
    (0.0312, 1.0)
    """
    cut = max(1, math.floor(total_steps * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = 1.0 - (step - cut) / max(1, cut * (1.0 / cut_frac - 1.0))
    p = min(1.0, max(0.0, p))
    return (1.0 + p * (ratio - 1.0)) / ratio


def get_schedule(name: str, *, warmup_ratio: float = 0.0, total_steps: int = 1,
                 stlr_cut_frac: float = 0.1, stlr_ratio: float = 32.0) -> ScheduleFn:
    """Return ``f(step, total_steps) -> multiplier`` for a schedule name.

    Args:
        name: One of ``constant``, ``linear``, ``cosine``, ``slanted_triangular``.
        warmup_ratio: Fraction of ``total_steps`` spent in linear warmup (not used by
            ``slanted_triangular``, which has its own rise set by ``stlr_cut_frac``).
        total_steps: Steps the schedule spans; sets the warmup length.
        stlr_cut_frac: Fraction of steps in the slanted-triangular rise.
        stlr_ratio: Ratio of the peak to the lowest slanted-triangular LR.
    """
    warmup_steps = int(round(warmup_ratio * total_steps))
    if name == "constant":
        return lambda s, t: constant(s, t, warmup_steps=warmup_steps)
    if name == "linear":
        return lambda s, t: linear(s, t, warmup_steps=warmup_steps)
    if name == "cosine":
        return lambda s, t: cosine(s, t, warmup_steps=warmup_steps)
    if name == "slanted_triangular":
        return lambda s, t: slanted_triangular(s, t, cut_frac=stlr_cut_frac, ratio=stlr_ratio)
    raise ValueError(f"Unknown lr_schedule {name!r}; expected one of {', '.join(SCHEDULES)}.")
