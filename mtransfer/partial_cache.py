"""Partial-network cache: the frozen lower part of a backbone runs once, not once per epoch.

A phase that trains the top of a backbone (``last_n``, the second stage of ``two_stage`` with
``last_n``, gradual unfreezing, chain-thaw) while its lowest groups stay frozen recomputes the
same lower activations every epoch. Here the hidden states entering the lowest block that
trains are extracted once into the feature cache (memory-mapped shards, one row of positions
per example, keyed by the weights below that block, the preprocessing and the data), and each
epoch runs the backbone from that block up (:meth:`~mtransfer.adapters.base.Adapter.forward_from_block`).

Exactness. Frozen groups run in evaluation mode (no dropout) whether cached or not, so the
cached activations are the ones an uncached run computes. Where training differs from
evaluation below the block (image augmentation, SpecAugment, LayerDrop, random crops:
:meth:`~mtransfer.adapters.base.Adapter.random_below_blocks`) the phase recomputes instead. Before
a phase uses the cache, :func:`check_replay` runs one real batch both ways (cached rows are
trimmed to their real positions and padded again, as the cache stores them) and the phase
recomputes when the outputs differ (an architecture whose blocks pass more than hidden states
from one to the next, say), with one line saying why. A phase whose cache would exceed the
budget (``TrainingArguments.partial_cache_gb``, estimated from that batch) recomputes too.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mtransfer.adapters.base import Adapter, LayerGroup

REPLAY_TOLERANCE = 1e-4  # largest difference (relative to the output's scale) between a replayed and a full forward


def split_block(adapter: Adapter, groups: Sequence[LayerGroup], trainable: frozenset[int]) -> int | None:
    """The block a phase's training starts at, when the groups below it are frozen and it is not the first block.

    Args:
        adapter: The model's adapter.
        groups: The model's layer groups (the head last).
        trainable: Positions of the phase's trainable groups.

    Returns:
        ``j`` when the lowest trainable group is block ``j >= 1`` of :meth:`Adapter.blocks`; None otherwise
        (head-only phases, full fine-tuning, no block stack, or a lowest trainable group that is no block).
    """
    blocks = adapter.blocks()
    if blocks is None or not trainable:
        return None
    lowest = groups[min(trainable)]
    for j, block in enumerate(blocks):
        if len(lowest.modules) == 1 and lowest.modules[0] is block:
            return j if j >= 1 else None
    return None


def trim(hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row's real positions (as the cache stores them)."""
    return [h[m.bool()] for h, m in zip(hidden, mask)]


def pad(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rows of positions padded with zeros at the end to the longest (as the cache returns them)."""
    longest = max(len(r) for r in rows)
    out = rows[0].new_zeros((len(rows), longest, rows[0].shape[-1]))
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@torch.no_grad()
def check_replay(adapter: Adapter, batch: dict[str, torch.Tensor], index: int) -> tuple[str | None, float]:
    """Run ``batch`` through the whole backbone and from block ``index`` on its cached-form input.

    Returns:
        ``(why not, bytes per example)``: why the cache cannot stand in for the lower part (None when the
        outputs agree within :data:`REPLAY_TOLERANCE`), and the float32 bytes one example's row takes.
    """
    modes = [(m, m.training) for m in adapter.modules()]  # restored module by module: frozen parts stay in eval
    adapter.eval()
    try:
        full = adapter.forward_features(batch)
        try:
            hidden, mask = adapter.block_input(batch, index)
            replayed = adapter.forward_from_block(batch, pad(trim(hidden, mask)), index)
        except Exception as err:  # an architecture the replay does not fit: recompute, and say why
            return f"replaying from block {index} failed ({type(err).__name__}: {str(err)[:120]})", 0.0
    finally:
        for module, mode in modes:
            module.training = mode
    pairs = [(full.pooled, replayed.pooled)]
    if full.tokens is not None and replayed.tokens is not None:
        if full.tokens.shape != replayed.tokens.shape:
            return f"replaying from block {index} gave positions {tuple(replayed.tokens.shape)}, not {tuple(full.tokens.shape)}", 0.0
        real = full.mask.bool() if full.mask is not None else torch.ones(full.tokens.shape[:2], dtype=torch.bool)
        pairs.append((full.tokens[real], replayed.tokens[real]))
    for a, b in pairs:
        if a.shape != b.shape:
            return f"replaying from block {index} gave shape {tuple(b.shape)}, not {tuple(a.shape)}", 0.0
        scale = float(a.abs().max().clamp(min=1.0))
        gap = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
        if not gap <= REPLAY_TOLERANCE * scale:
            return f"replaying from block {index} did not reproduce the backbone's output (difference {gap:.2g})", 0.0
    per_row = float(mask.sum()) / max(1, len(mask)) * hidden.shape[-1] * 4
    return None, per_row


def describe(index: int, rows: int, megabytes: float) -> str:
    """The run's line for a phase that reads the partial cache."""
    return (f"partial cache: the input of block {index} for {rows} examples ({megabytes:.1f} MB) is extracted once; "
            "the frozen blocks below it do not run in this phase's epochs")


def recompute_reason(adapter: Adapter, args: Any) -> str | None:
    """Why no phase of this run reads a partial cache, whatever its split (None: it may)."""
    if not args.cache_features:
        return "cache_features=False"
    if not args.partial_cache_gb:
        return "partial_cache_gb=0"
    if adapter.head_modules():
        return "the adapter trains modules of its own that read every layer"
    return adapter.random_below_blocks()


__all__ = ["REPLAY_TOLERANCE", "split_block", "check_replay", "recompute_reason", "describe", "trim", "pad"]
