"""Contrastive fine-tuning on pairs built from the labels (SetFit's recipe, for every adapter that pools).

With few labelled examples, fine-tuning the backbone so that examples of one class lie close and
examples of different classes lie apart, then fitting a light classifier on the tuned
embeddings, beats fine-tuning backbone and head on the labels alone (Tunstall et al. 2022,
"Efficient Few-Shot Learning Without Prompts"): n labelled examples give on the order of n²
pairs to learn from. SetFit does it for sentence encoders; here any adapter's pooled feature
takes part, so text, sentence, image, plain-torch and audio backbones all get it.

:func:`sample_pairs` draws an epoch's pairs: half positive (two different examples of one class,
the class drawn uniformly among those with two or more examples), half negative (one example of
each of two different classes, the pair of classes drawn uniformly), in a shuffled order that
depends only on the seed and the epoch, so runs resume exactly and every process of a
distributed run draws the same list (each then trains its shard of it). :func:`cosine_pair_loss`
is sentence-transformers' ``CosineSimilarityLoss``: the squared error between the cosine
similarity of the two pooled features and the pair's label (1 or 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

PAIRS_PER_EXAMPLE = 40  # SetFit's default: 20 iterations, each a positive and a negative pair per example
# ...up to this many per epoch (100 steps of 16): on fortunes / MiniLM at 16 per class (80 examples), 1,600 pairs scored as well as
# 3,200 (README, Benchmarks), and SetFit's 40 per example would make an epoch of 64 per class x 5 classes 12,800 pairs
MAX_DEFAULT_PAIRS = 1600
HEAD_KINDS = ("logistic", "neural")


def sample_pairs(labels: torch.Tensor, num_pairs: int, seed: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An epoch's pairs of example indices and their labels (1: same class, 0: different classes).

    Args:
        labels: Class ids of the labelled examples.
        num_pairs: Pairs to draw (rounded up to an even number: half positive, half negative).
        seed, epoch: The draw depends on these alone.

    Shape:
        labels: ``(n,)``. Returns ``(num_pairs, 2)`` indices and ``(num_pairs,)`` float labels.

    Raises:
        ValueError: Fewer than two classes, or no class with two examples (no positive pair).
    """
    labels = torch.as_tensor(labels).long().flatten()
    classes = torch.unique(labels)
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    pairable = [m for m in members if len(m) >= 2]
    if len(classes) < 2:
        raise ValueError(f"contrastive pairs need at least two classes; the labels hold {len(classes)}.")
    if not pairable:
        raise ValueError("contrastive pairs need a class with at least two examples (a positive pair); every class "
                         "has one.")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    half = (num_pairs + 1) // 2

    def pick(group: torch.Tensor, count: int) -> torch.Tensor:
        return group[torch.randint(len(group), (count,), generator=g)]

    # positives: a pairable class, then two distinct members of it
    anchors = torch.randint(len(pairable), (half,), generator=g)
    positive = torch.empty(half, 2, dtype=torch.long)
    for k, group in enumerate(pairable):
        rows = torch.nonzero(anchors == k).flatten()
        if len(rows):
            first = torch.randint(len(group), (len(rows),), generator=g)
            second = (first + 1 + torch.randint(len(group) - 1, (len(rows),), generator=g)) % len(group)
            positive[rows] = torch.stack([group[first], group[second]], dim=1)
    # negatives: two different classes, then one member of each
    a = torch.randint(len(members), (half,), generator=g)
    b = (a + 1 + torch.randint(len(members) - 1, (half,), generator=g)) % len(members)
    negative = torch.empty(half, 2, dtype=torch.long)
    for k, group in enumerate(members):
        rows = torch.nonzero(a == k).flatten()
        negative[rows, 0] = pick(group, len(rows))
        rows = torch.nonzero(b == k).flatten()
        negative[rows, 1] = pick(group, len(rows))
    pairs = torch.cat([positive, negative])
    targets = torch.cat([torch.ones(half), torch.zeros(half)])
    order = torch.randperm(len(pairs), generator=g)
    return pairs[order], targets[order]


def default_num_pairs(num_examples: int) -> int:
    """Pairs per epoch when none is set: :data:`PAIRS_PER_EXAMPLE` per labelled example (SetFit's 20 iterations),
    at most :data:`MAX_DEFAULT_PAIRS`.

    >>> default_num_pairs(40), default_num_pairs(320)
    (1600, 1600)
    """
    return min(PAIRS_PER_EXAMPLE * num_examples, MAX_DEFAULT_PAIRS)


class PairDataset(Dataset):
    """An epoch's pairs over a labelled dataset's inputs (``set_epoch`` draws the next epoch's)."""

    def __init__(self, inputs: Sequence[Any], labels: torch.Tensor, num_pairs: int, seed: int) -> None:
        self.inputs, self.labels, self.num_pairs, self.seed = list(inputs), labels, num_pairs, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.pairs, self.targets = sample_pairs(self.labels, self.num_pairs, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Any, Any, float, int]:
        i, j = self.pairs[index].tolist()
        return self.inputs[i], self.inputs[j], float(self.targets[index]), index


@dataclass
class PairCollator:
    """Batches pairs as one adapter batch: the left inputs, then the right ones (one forward for both)."""

    adapter: Any

    def __call__(self, items: list[tuple[Any, Any, float, int]]) -> dict[str, Any]:
        left, right, targets, indices = zip(*items)
        return {"inputs": self.adapter.preprocess(list(left) + list(right), training=True),
                "pair_labels": torch.tensor(targets, dtype=torch.float32),
                "indices": torch.tensor(indices, dtype=torch.long)}


def cosine_pair_loss(pooled: torch.Tensor, pair_labels: torch.Tensor) -> torch.Tensor:
    """Squared error between the cosine similarity of each pair and its label (``CosineSimilarityLoss``).

    Shape:
        pooled: ``(2 * pairs, dim)``: the left members, then the right ones. pair_labels: ``(pairs,)``.
    """
    left, right = pooled.float().chunk(2)
    return F.mse_loss(F.cosine_similarity(left, right, dim=-1), pair_labels.to(pooled.device))
