"""The learning rate and weight decay of a head-only phase, chosen on cached features.

A new head on a frozen backbone needs a rate of its own, and the right one depends on the
features' scale and the amount of data: 2e-5 (a backbone's rate) leaves a linear head near
chance, 5e-3 suits some feature sets and is far too low or too high for others. When the user
gives no head rate, the trainer trains every candidate (``learning_rates`` x ``weight_decays``)
on the cached features of the training data for the epochs of the phase, under the run's
schedule, batch size, optimizer (AdamW, no decay on biases) and gradient clipping, and keeps
the one with the lowest validation loss (the task's: cross-entropy, binary cross-entropy, squared
error on standardised targets) on the run's evaluation set when it has one (the set the best
epoch is chosen on; a test split is never read), else ``folds``-fold cross-validation of the
training data (stratified for single-label classification). The loss, not the run's metric,
ranks them: on the validation set of a few-label task (a hundred examples) accuracy moves in
steps of 1 %, ties across many candidates and rewards the luckiest of 27; the loss is the
smoother, proper score. Every candidate's metric is recorded beside its loss.

All candidates train at once: their heads are stacked and trained with one batched forward and
backward per step (``torch.func.vmap``), so a search costs a few times one head-only run on
cached features, seconds for thousands of examples. The search computes in float32 whatever the
run's ``mixed_precision``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from mtransfer.heads import Head
from mtransfer.metrics import compute_metrics
from mtransfer.strategies import no_weight_decay_parameters

HEAD_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
HEAD_WEIGHT_DECAYS = (0.01, 0.1, 1.0)
SEARCH_FOLDS = 3
MIN_SEARCH_EXAMPLES = 2 * SEARCH_FOLDS


@dataclass
class HeadSearch:
    """The outcome of :func:`search_head_settings` (written to the run record as a dict).

    Attributes:
        learning_rate, weight_decay: The chosen settings.
        metric: The run's validation metric, recorded per candidate (``accuracy``, ``mse``...);
            the candidates are ranked by their validation loss.
        greater_is_better: Its direction.
        validation: Where it was measured (``"eval_dataset (N examples)"`` or
            ``"3-fold cross-validation of the training data (N examples)"``).
        candidates: ``{"learning_rate", "weight_decay", "value", "loss"}`` per candidate.
        epochs, steps: Epochs and optimizer steps each candidate trained (per fold).
        seconds: Wall time of the search (feature extraction not included: the run reuses it).
    """

    learning_rate: float
    weight_decay: float
    metric: str
    greater_is_better: bool
    validation: str
    candidates: list[dict[str, float]] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    searched: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def folds_of(labels: torch.Tensor, folds: int, seed: int, stratify: bool) -> list[torch.Tensor]:
    """``folds`` disjoint index sets covering ``range(len(labels))``, class-balanced when ``stratify``.

    Shape:
        labels: ``(n,)`` class ids when ``stratify``, else anything with ``n`` rows.
    """
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    if stratify:  # each class's examples dealt round-robin, classes one after the other
        order = order[torch.sort(labels[order].long(), stable=True).indices]
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    return [torch.nonzero(fold_of == k).flatten() for k in range(folds)]


def _clone(head: Head) -> Head:
    """A copy of ``head``'s module and weights without its hooks (a deep copy would carry them along)."""
    clone = Head(head.config)
    clone.load_state_dict(head.state_dict())
    return clone.to(head.out.weight.device)


def _decayed(head: Head) -> set[str]:
    """Names of the head's parameters that take weight decay: the trainer optimizer's rule (no biases, no norms)."""
    skip = no_weight_decay_parameters(head)
    return {name for name, p in head.named_parameters() if id(p) not in skip}


class _StackedHeads:
    """``K`` copies of one head trained together under AdamW, candidate ``k`` at its own rate and decay."""

    def __init__(self, head: Head, rates: torch.Tensor, decays: torch.Tensor, betas: tuple[float, float], eps: float,
                 max_grad_norm: float | None) -> None:
        from torch.func import stack_module_state

        self.template = _clone(head)
        k = len(rates)
        params, self.buffers = stack_module_state([_clone(head) for _ in range(k)])
        self.params = {n: p.detach().clone() for n, p in params.items()}
        self.m = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.rates, self.decays, self.decayed = rates, decays, _decayed(head)
        self.betas, self.eps, self.max_grad_norm, self.step_count = betas, eps, max_grad_norm, 0

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return self.template.loss(functional_call(self.template, (params, buffers), (x,)), y)

    def step(self, x: torch.Tensor, y: torch.Tensor, multiplier: float) -> None:
        """One AdamW step of every candidate on the batch ``(x, y)`` at ``multiplier`` x its peak rate."""
        from torch.func import grad, vmap

        self.template.train()
        grads = vmap(grad(self._loss), in_dims=(0, 0, None, None), randomness="different")(self.params, self.buffers, x, y)
        k = len(self.rates)
        if self.max_grad_norm:  # per candidate, over all its parameters (clip_grad_norm_)
            norm = torch.sqrt(sum(g.reshape(k, -1).pow(2).sum(1) for g in grads.values()))
            scale = (self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            grads = {n: g * scale.view(-1, *[1] * (g.dim() - 1)) for n, g in grads.items()}
        self.step_count += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for n, p in self.params.items():
            shape = (-1, *[1] * (p.dim() - 1))
            lr = (self.rates * multiplier).view(shape)
            if n in self.decayed:
                p.mul_(1 - lr * self.decays.view(shape))
            self.m[n].mul_(b1).add_(grads[n], alpha=1 - b1)
            self.v[n].mul_(b2).addcmul_(grads[n], grads[n], value=1 - b2)
            p.sub_(lr * (self.m[n] / c1) / ((self.v[n] / c2).sqrt() + self.eps))

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every candidate's outputs on ``x``: ``(K, n, num_outputs)``."""
        from torch.func import functional_call, vmap

        self.template.eval()
        return vmap(lambda p, b: functional_call(self.template, (p, b), (x,)), in_dims=(0, 0))(self.params, self.buffers)


def _train_and_score(head: Head, views: Sequence[torch.Tensor], labels: torch.Tensor, train_idx: torch.Tensor,
                     val_x: torch.Tensor, val_y: torch.Tensor, grid: list[tuple[float, float]], *, epochs: int,
                     batch_size: int, multiplier: Callable[[int], float], metric: str, seed: int,
                     betas: tuple[float, float], eps: float, max_grad_norm: float | None) -> list[tuple[float, float]]:
    """(metric, loss) on the validation data of every candidate trained on ``train_idx``."""
    device = val_x.device
    rates = torch.tensor([lr for lr, _ in grid], device=device)
    decays = torch.tensor([wd for _, wd in grid], device=device)
    torch.manual_seed(seed)
    heads = _StackedHeads(head, rates, decays, betas, eps, max_grad_norm)
    step = 0
    for epoch in range(epochs):
        x_all = views[epoch % len(views)]
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))]
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            heads.step(x_all[batch.to(x_all.device)], labels[batch.to(labels.device)], multiplier(step))
            step += 1
    outs = heads.outputs(val_x)
    scores = []
    for k in range(len(grid)):
        loss = float(head.loss(outs[k], val_y))
        preds = head.predict(outs[k]).cpu().numpy()
        value = compute_metrics(head.task, [metric], preds, val_y.cpu().numpy())[metric]
        scores.append((float(value) if math.isfinite(value) else float("nan"), loss))
    return scores


def search_head_settings(head: Head, train_views: Sequence[torch.Tensor], train_labels: torch.Tensor, *,
                         eval_features: torch.Tensor | None = None, eval_labels: torch.Tensor | None = None,
                         epochs: int, batch_size: int, multiplier: Callable[[int, int], float], metric: str,
                         greater_is_better: bool, seed: int = 0,
                         learning_rates: Sequence[float] = HEAD_LEARNING_RATES,
                         weight_decays: Sequence[float] = HEAD_WEIGHT_DECAYS, folds: int = SEARCH_FOLDS,
                         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                         max_grad_norm: float | None = 1.0) -> HeadSearch:
    """Train a copy of ``head`` per candidate setting on cached features; return the best on validation data.

    Args:
        head: The run's freshly initialised head; every candidate starts from its weights (it is not changed).
        train_views: Cached training features, one tensor per view; epoch ``e`` reads view ``e % len``.
        train_labels: Training targets (the trainer's).
        eval_features, eval_labels: Validation data; None: ``folds``-fold cross-validation of the training data.
        epochs: Epochs of the head-only phase.
        batch_size: Examples per optimizer step (the run's, over processes and accumulation).
        multiplier: ``(step, steps_per_epoch) -> factor`` of the peak rate: the run's schedule.
        metric: Metric recorded per candidate (a name :func:`~mtransfer.metrics.compute_metrics`
            knows); the lowest validation loss wins, ties go to the better metric.
        greater_is_better: Its direction.
        seed: Initialisation of dropout, the batch order and the folds.

    Shape:
        train_views: each ``(n, dim)``. train_labels: ``(n,)`` class ids or ``(n, k)`` targets.
        eval_features: ``(m, dim)``.
    """
    start = time.perf_counter()
    grid = [(float(lr), float(wd)) for lr in learning_rates for wd in dict.fromkeys(weight_decays)]
    n = len(train_labels)
    if eval_features is not None:
        splits = [(torch.arange(n), eval_features, eval_labels)]
        validation = f"eval_dataset ({len(eval_labels)} examples)"
    else:
        parts = folds_of(train_labels, folds, seed, stratify=head.kind.has_class_names and not head.kind.multi_label)
        splits = [(torch.cat([p for j, p in enumerate(parts) if j != k]), train_views[0][parts[k]], train_labels[parts[k]])
                  for k in range(folds)]
        validation = f"{folds}-fold cross-validation of the training data ({n} examples)"
    totals = [[0.0, 0.0] for _ in grid]
    steps = 0
    for train_idx, val_x, val_y in splits:
        steps_per_epoch = math.ceil(len(train_idx) / batch_size)
        steps = steps_per_epoch * epochs
        scores = _train_and_score(head, train_views, train_labels, train_idx, val_x, val_y, grid, epochs=epochs,
                                  batch_size=batch_size, multiplier=lambda s, spe=steps_per_epoch: multiplier(s, spe),
                                  metric=metric, seed=seed, betas=betas, eps=eps, max_grad_norm=max_grad_norm)
        for total, (value, loss) in zip(totals, scores):
            total[0] += value / len(splits)
            total[1] += loss / len(splits)
    candidates = [{"learning_rate": lr, "weight_decay": wd, "value": v, "loss": loss}
                  for (lr, wd), (v, loss) in zip(grid, totals)]
    sign = -1.0 if greater_is_better else 1.0
    ranked = sorted(candidates, key=lambda c: (c["loss"] if math.isfinite(c["loss"]) else math.inf,
                                               sign * c["value"] if not math.isnan(c["value"]) else math.inf))
    best = ranked[0]
    return HeadSearch(best["learning_rate"], best["weight_decay"], metric, greater_is_better, validation, candidates,
                      epochs, steps, time.perf_counter() - start)
