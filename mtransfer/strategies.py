"""Transfer strategies: which layer groups train in which epoch, and at what learning rate.

A strategy turns the ordered layer groups of a model (adapter groups from the input
embeddings / stem up to the top block, then the head) into a :class:`TrainingPlan`: a list of
:class:`Phase` objects, each covering whole epochs, each naming the trainable groups and the
peak learning rate of every group. The trainer reads the plan; nothing modality-specific lives
here, so every adapter gets every strategy.

Strategies:
    ``frozen``: the head alone (feature extraction).
    ``last_n``: the top ``last_n`` adapter groups and the head.
    ``full``: everything.
    ``two_stage``: the head alone at ``head_learning_rate`` for ``head_epochs`` epochs, then
        the top ``last_n`` groups (all when ``last_n`` is None) and the head at
        ``learning_rate`` (the Keras / fastai freeze-then-unfreeze recipe).
    ``gradual_unfreezing``: the head alone, then one more group from the top every
        ``unfreeze_every`` epochs (ULMFiT).
    ``chain_thaw``: the head alone, then each adapter group alone from the first (bottom) to
        the last, then all groups (DeepMoji), ``chain_thaw_epochs`` epochs per step and the
        remaining epochs for the last.
    ``contrastive``: the adapter groups (the top ``last_n`` when set) learn from pairs built
        from the labels (:mod:`mtransfer.contrastive`, SetFit's recipe), then the head: fitted
        on the tuned features by logistic regression after the last epoch
        (``contrastive_head="logistic"``), or trained with the top groups for the last
        ``head_epochs`` epochs (``"neural"``).

Discriminative learning rates (``discriminative_lr_decay``, e.g. 2.6 as in ULMFiT) combine with
any strategy: the head trains at the phase's rate and each adapter group below it at that rate
divided by the decay once more per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

STRATEGIES = ("frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw", "contrastive")
CONTRASTIVE_HEADS = ("logistic", "neural")
HEAD_LEARNING_RATE = 5e-3  # default peak rate of head-only phases, independent of the backbone's


@dataclass(frozen=True)
class Phase:
    """A run of epochs with one trainable set and one set of peak learning rates.

    Attributes:
        name: Human-readable name (``"head"``, ``"unfreeze top 2"``, ``"thaw layer.3"``...).
        start_epoch: First epoch (0-based) of the phase.
        num_epochs: Length in epochs.
        trainable: Indices of the trainable groups (the head is the last index).
        peak_lrs: Peak learning rate per group; 0.0 for frozen groups.
        segment: Schedule segment; the LR schedule restarts where the segment changes.
        objective: What the phase's epochs minimise: ``"task"`` (the head's loss on the labels) or
            ``"pairs"`` (the contrastive pair loss on pooled features; no head takes part).
    """

    name: str
    start_epoch: int
    num_epochs: int
    trainable: frozenset[int]
    peak_lrs: tuple[float, ...]
    segment: int
    objective: str = "task"

    @property
    def end_epoch(self) -> int:
        return self.start_epoch + self.num_epochs


@dataclass(frozen=True)
class TrainingPlan:
    """The phases of a run over named layer groups (the head is the last group).

    >>> plan = plan_strategy("two_stage", ["embeddings", "layer.0", "layer.1", "head"],
    ...                      num_epochs=3, learning_rate=1e-4, head_epochs=1)
    >>> [sorted(plan.trainable_names(e)) for e in range(3)]
    [['head'], ['embeddings', 'head', 'layer.0', 'layer.1'], ['embeddings', 'head', 'layer.0', 'layer.1']]
    """

    group_names: tuple[str, ...]
    phases: tuple[Phase, ...]
    num_epochs: int

    def phase_at(self, epoch: int) -> Phase:
        for phase in self.phases:
            if phase.start_epoch <= epoch < phase.end_epoch:
                return phase
        return self.phases[-1]

    def trainable(self, epoch: int) -> frozenset[int]:
        """Positions of the groups that train in ``epoch`` (the head is the last position)."""
        return self.phase_at(epoch).trainable

    def trainable_names(self, epoch: int) -> set[str]:
        """Names of the groups that train in ``epoch`` (labels for people; :meth:`trainable` is the identity)."""
        return {self.group_names[i] for i in self.phase_at(epoch).trainable}

    def segment_bounds(self, segment: int) -> tuple[int, int]:
        """First epoch and number of epochs of a schedule segment."""
        members = [p for p in self.phases if p.segment == segment]
        return members[0].start_epoch, sum(p.num_epochs for p in members)

    def describe(self) -> list[dict]:
        """The plan as JSON-ready rows (for logs, metrics files and model cards)."""
        return [
            {
                "phase": p.name,
                "epochs": [p.start_epoch, p.end_epoch],
                "trainable": [self.group_names[i] for i in sorted(p.trainable)],
                "peak_lr": {self.group_names[i]: p.peak_lrs[i] for i in sorted(p.trainable)},
                **({"objective": p.objective} if p.objective != "task" else {}),
            }
            for p in self.phases
        ]


def _lrs(num_groups: int, trainable: set[int], rate: float, decay: float | None) -> tuple[float, ...]:
    """Peak LR per group: ``rate`` at the head, divided by ``decay`` per group further down."""
    head = num_groups - 1
    out = []
    for g in range(num_groups):
        if g not in trainable:
            out.append(0.0)
        elif decay:
            out.append(rate / decay ** (head - g))
        else:
            out.append(rate)
    return tuple(out)


@dataclass(frozen=True)
class _Spec:
    """The settings a planner reads; groups by position, the head last."""

    names: tuple[str, ...]
    num_epochs: int
    learning_rate: float
    head_rate: float
    decay: float | None
    last_n: int | None
    head_epochs: int
    unfreeze_every: int
    chain_thaw_epochs: int
    contrastive_head: str = "logistic"

    @property
    def head(self) -> int:
        return len(self.names) - 1

    @property
    def adapter(self) -> list[int]:
        return list(range(self.head))

    def lrs(self, trainable: set[int], rate: float | None = None, decay: bool = True) -> tuple[float, ...]:
        return _lrs(len(self.names), trainable, self.learning_rate if rate is None else rate, self.decay if decay else None)

    def top_groups(self, required: bool) -> list[int]:
        """The top ``last_n`` adapter groups (all when ``last_n`` is None and not required)."""
        if self.last_n is None:
            if required:
                raise ValueError("strategy 'last_n' needs last_n (the number of top adapter groups to train).")
            return self.adapter
        if not 1 <= self.last_n <= len(self.adapter):
            raise ValueError(
                f"last_n={self.last_n} does not fit this model: it has {len(self.adapter)} adapter layer groups "
                f"({', '.join(self.names[:self.head])}); expected 1..{len(self.adapter)}.")
        return self.adapter[len(self.adapter) - self.last_n:]


def _plan_frozen(s: _Spec) -> list[Phase]:
    return [Phase("head", 0, s.num_epochs, frozenset({s.head}), s.lrs({s.head}, s.head_rate, decay=False), 0)]


def _plan_full(s: _Spec) -> list[Phase]:
    every = set(range(len(s.names)))
    return [Phase("full", 0, s.num_epochs, frozenset(every), s.lrs(every), 0)]


def _plan_last_n(s: _Spec) -> list[Phase]:
    top = set(s.top_groups(required=True)) | {s.head}
    return [Phase(f"top {s.last_n} + head", 0, s.num_epochs, frozenset(top), s.lrs(top), 0)]


def _plan_two_stage(s: _Spec) -> list[Phase]:
    if not 1 <= s.head_epochs < s.num_epochs:
        raise ValueError(
            f"two_stage needs 1 <= head_epochs < num_epochs (a head stage and a fine-tuning stage); "
            f"got head_epochs={s.head_epochs}, num_epochs={s.num_epochs}.")
    top = set(s.top_groups(required=False)) | {s.head}
    label = "unfreeze all" if s.last_n is None else f"unfreeze top {s.last_n}"
    return [Phase("head", 0, s.head_epochs, frozenset({s.head}), s.lrs({s.head}, s.head_rate, decay=False), 0),
            Phase(label, s.head_epochs, s.num_epochs - s.head_epochs, frozenset(top), s.lrs(top), 1)]


def _plan_gradual_unfreezing(s: _Spec) -> list[Phase]:
    if s.unfreeze_every < 1:
        raise ValueError(f"unfreeze_every must be >= 1 epoch, got {s.unfreeze_every}.")
    phases, epoch, adapter = [], 0, s.adapter
    for k in range(len(adapter) + 1):
        if epoch >= s.num_epochs:
            break
        trainable = {s.head} | set(adapter[len(adapter) - k:] if k else [])
        length = min(s.unfreeze_every if k < len(adapter) else s.num_epochs - epoch, s.num_epochs - epoch)
        name = "head" if k == 0 else f"unfreeze {s.names[adapter[len(adapter) - k]]}"
        rate = s.head_rate if k == 0 else None
        phases.append(Phase(name, epoch, length, frozenset(trainable), s.lrs(trainable, rate, decay=rate is None), 0))
        epoch += length
    return phases


def _plan_chain_thaw(s: _Spec) -> list[Phase]:
    if s.chain_thaw_epochs < 1:
        raise ValueError(f"chain_thaw_epochs must be >= 1, got {s.chain_thaw_epochs}.")
    needed = s.chain_thaw_epochs * (len(s.adapter) + 1) + 1
    if s.num_epochs < needed:
        raise ValueError(
            f"chain_thaw over {len(s.adapter)} adapter groups with chain_thaw_epochs={s.chain_thaw_epochs} needs "
            f"num_epochs >= {needed} (head, each group alone, then all); got num_epochs={s.num_epochs}.")
    step = s.chain_thaw_epochs
    phases = [Phase("head", 0, step, frozenset({s.head}), s.lrs({s.head}, s.head_rate, decay=False), 0)]
    for g in s.adapter:
        phases.append(Phase(f"thaw {s.names[g]}", step * len(phases), step, frozenset({g}), s.lrs({g}, decay=False),
                            len(phases)))
    every = set(range(len(s.names)))
    start = step * len(phases)
    phases.append(Phase("all", start, s.num_epochs - start, frozenset(every), s.lrs(every), len(phases)))
    return phases


def _plan_contrastive(s: _Spec) -> list[Phase]:
    top = set(s.top_groups(required=False))
    if s.contrastive_head == "logistic":  # the head is fitted on the tuned features after the last epoch
        return [Phase("contrastive", 0, s.num_epochs, frozenset(top), s.lrs(top), 0, "pairs")]
    if not 1 <= s.head_epochs < s.num_epochs:
        raise ValueError(
            f"contrastive with a neural head needs 1 <= head_epochs < num_epochs (pair epochs, then head epochs); "
            f"got head_epochs={s.head_epochs}, num_epochs={s.num_epochs}.")
    pairs = s.num_epochs - s.head_epochs
    both = top | {s.head}
    rates = s.lrs(both)[:-1] + (s.head_rate,)
    return [Phase("contrastive", 0, pairs, frozenset(top), s.lrs(top), 0, "pairs"),
            Phase("head + top" if s.last_n is not None else "head + all", pairs, s.head_epochs, frozenset(both), rates, 1)]


_PLANNERS = {"frozen": _plan_frozen, "last_n": _plan_last_n, "full": _plan_full, "two_stage": _plan_two_stage,
             "gradual_unfreezing": _plan_gradual_unfreezing, "chain_thaw": _plan_chain_thaw,
             "contrastive": _plan_contrastive}


def plan_strategy(
    strategy: str,
    group_names: list[str] | tuple[str, ...],
    *,
    num_epochs: int,
    learning_rate: float,
    head_learning_rate: float | None = None,
    last_n: int | None = None,
    head_epochs: int = 1,
    unfreeze_every: int = 1,
    chain_thaw_epochs: int = 1,
    discriminative_lr_decay: float | None = None,
    contrastive_head: str = "logistic",
) -> TrainingPlan:
    """Build the :class:`TrainingPlan` of a strategy over ordered layer groups.

    Args:
        strategy: One of :data:`STRATEGIES`.
        group_names: Layer-group names, bottom to top, the head last.
        num_epochs: Total epochs of the run.
        learning_rate: Peak LR of the phases that train adapter groups (and the head with them).
        head_learning_rate: Peak LR of every head-only phase (``frozen``, the first phase of
            ``two_stage``, ``gradual_unfreezing`` and ``chain_thaw``). None: ``HEAD_LEARNING_RATE``
            (5e-3, whatever ``learning_rate`` is: a new linear head needs a rate of its own, far
            above a pretrained backbone's). The trainer passes the rate it chose on the feature
            cache (:mod:`mtransfer.head_search`) when the user gave none.
        last_n: Adapter groups that train under ``last_n``, and under ``two_stage``'s second
            stage (all when None).
        head_epochs: Length of ``two_stage``'s head-only stage.
        unfreeze_every: Epochs between two unfreezings under ``gradual_unfreezing``.
        chain_thaw_epochs: Epochs of each single-group step under ``chain_thaw``.
        discriminative_lr_decay: Divide the LR by this once per group going down from the
            head; None or 1.0 for one LR everywhere.
        contrastive_head: ``contrastive``: ``"logistic"`` (fitted after the pair epochs) or
            ``"neural"`` (trained with the top groups for the last ``head_epochs`` epochs).

    Raises:
        ValueError: Unknown strategy, or settings that do not fit the groups and epochs.
    """
    names = tuple(group_names)
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ValueError(f"Layer-group names must be unique; {dupes} appear more than once in {list(names)}.")
    if len(names) < 2:
        raise ValueError(f"A plan needs at least one adapter group and the head; got groups {list(names)}.")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")
    if contrastive_head not in CONTRASTIVE_HEADS:
        raise ValueError(f"contrastive_head={contrastive_head!r}; expected one of {', '.join(CONTRASTIVE_HEADS)}.")
    if strategy not in _PLANNERS:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    decay = discriminative_lr_decay if discriminative_lr_decay and discriminative_lr_decay != 1.0 else None
    spec = _Spec(names, num_epochs, learning_rate, head_learning_rate if head_learning_rate is not None else HEAD_LEARNING_RATE,
                 decay, last_n, head_epochs, unfreeze_every, chain_thaw_epochs, contrastive_head)
    phases = _PLANNERS[strategy](spec)
    return TrainingPlan(group_names=names, phases=tuple(phases), num_epochs=num_epochs)


# --- optimizer param groups ---------------------------------------------------------------
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


def _is_norm(module: nn.Module) -> bool:
    """Normalisation layers by type: torch's, and leaf layers of classes such as transformers' ``*RMSNorm``.

    Only leaves count by class name: a block such as wav2vec2's ``...EncoderLayerStableLayerNorm``
    is named after its norm placement and holds attention and feed-forward weights.
    """
    if isinstance(module, _NORM_TYPES):
        return True
    return next(module.children(), None) is None and type(module).__name__.rstrip("123d").endswith("Norm")


def no_weight_decay_parameters(model: nn.Module) -> set[int]:
    """Ids of the parameters that take no weight decay.

    In order: what a module's own ``no_weight_decay()`` names (timm models: ``pos_embed``,
    ``cls_token``, ...; names relative to that module); the tokens and position tables an
    embeddings module holds directly (transformers ViT's ``cls_token``, ``position_embeddings``);
    every parameter of a normalisation layer; every bias. Decided by module type and
    registration, not by parameter names or shapes.
    """
    out: set[int] = set()
    for module in model.modules():
        own = getattr(module, "no_weight_decay", None)
        if callable(own) and module is not model:
            try:
                names = set(own())
            except TypeError:  # a method with arguments is not timm's hook
                names = set()
            for name, p in module.named_parameters():
                if name in names or any(name.startswith(n + ".") for n in names):
                    out.add(id(p))
        direct = dict(module.named_parameters(recurse=False))
        if type(module).__name__.endswith("Embeddings"):
            out.update(id(p) for p in direct.values())
        if _is_norm(module):
            out.update(id(p) for p in module.parameters())
        if isinstance(direct.get("bias"), nn.Parameter):
            out.add(id(direct["bias"]))
    return out


def optimizer_param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """One or two optimizer param groups per layer group (with / without weight decay).

    Each carries ``layer_group`` (the group's position, which the scheduler reads) and
    ``group_name`` (its label). ``lr`` is 1.0: a ``LambdaLR`` sets every group's rate.
    """
    skip = no_weight_decay_parameters(model)
    groups, seen = [], set()
    for index, g in enumerate(model.layer_groups()):
        decay, no_decay = [], []
        for p in g.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if id(p) in skip else decay).append(p)
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr": 1.0, "layer_group": index, "group_name": g.name})
    return groups
