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

Discriminative learning rates (``discriminative_lr_decay``, e.g. 2.6 as in ULMFiT) combine with
any strategy: the head trains at the phase's rate and each adapter group below it at that rate
divided by the decay once more per group.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw")


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
    """

    name: str
    start_epoch: int
    num_epochs: int
    trainable: frozenset[int]
    peak_lrs: tuple[float, ...]
    segment: int

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

    def trainable_names(self, epoch: int) -> set[str]:
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
) -> TrainingPlan:
    """Build the :class:`TrainingPlan` of a strategy over ordered layer groups.

    Args:
        strategy: One of :data:`STRATEGIES`.
        group_names: Layer-group names, bottom to top, the head last.
        num_epochs: Total epochs of the run.
        learning_rate: Peak LR of the fine-tuning phases (and of the head under ``frozen``,
            ``last_n``, ``full`` and ``gradual_unfreezing``).
        head_learning_rate: Peak LR of head-only phases of ``two_stage`` and ``chain_thaw``;
            defaults to ten times ``learning_rate``.
        last_n: Adapter groups that train under ``last_n``, and under ``two_stage``'s second
            stage (all when None).
        head_epochs: Length of ``two_stage``'s head-only stage.
        unfreeze_every: Epochs between two unfreezings under ``gradual_unfreezing``.
        chain_thaw_epochs: Epochs of each single-group step under ``chain_thaw``.
        discriminative_lr_decay: Divide the LR by this once per group going down from the
            head; None or 1.0 for one LR everywhere.

    Raises:
        ValueError: Unknown strategy, or settings that do not fit the groups and epochs.
    """
    names = tuple(group_names)
    n = len(names)
    if n < 2:
        raise ValueError(f"A plan needs at least one adapter group and the head; got groups {list(names)}.")
    head = n - 1
    adapter = list(range(head))
    decay = discriminative_lr_decay if discriminative_lr_decay and discriminative_lr_decay != 1.0 else None
    head_rate = head_learning_rate if head_learning_rate is not None else 10.0 * learning_rate
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")

    def check_last_n(required: bool) -> list[int]:
        if last_n is None:
            if required:
                raise ValueError("strategy 'last_n' needs last_n (the number of top adapter groups to train).")
            return adapter
        if not 1 <= last_n <= len(adapter):
            raise ValueError(
                f"last_n={last_n} does not fit this model: it has {len(adapter)} adapter layer groups "
                f"({', '.join(names[:head])}); expected 1..{len(adapter)}."
            )
        return adapter[len(adapter) - last_n:]

    phases: list[Phase] = []
    if strategy == "frozen":
        phases.append(Phase("head", 0, num_epochs, frozenset({head}), _lrs(n, {head}, learning_rate, decay), 0))
    elif strategy == "full":
        every = set(range(n))
        phases.append(Phase("full", 0, num_epochs, frozenset(every), _lrs(n, every, learning_rate, decay), 0))
    elif strategy == "last_n":
        top = set(check_last_n(required=True)) | {head}
        phases.append(Phase(f"top {last_n} + head", 0, num_epochs, frozenset(top), _lrs(n, top, learning_rate, decay), 0))
    elif strategy == "two_stage":
        if not 1 <= head_epochs < num_epochs:
            raise ValueError(
                f"two_stage needs 1 <= head_epochs < num_epochs (a head stage and a fine-tuning stage); "
                f"got head_epochs={head_epochs}, num_epochs={num_epochs}."
            )
        top = set(check_last_n(required=False)) | {head}
        phases.append(Phase("head", 0, head_epochs, frozenset({head}), _lrs(n, {head}, head_rate, None), 0))
        label = "unfreeze all" if last_n is None else f"unfreeze top {last_n}"
        phases.append(Phase(label, head_epochs, num_epochs - head_epochs, frozenset(top), _lrs(n, top, learning_rate, decay), 1))
    elif strategy == "gradual_unfreezing":
        if unfreeze_every < 1:
            raise ValueError(f"unfreeze_every must be >= 1 epoch, got {unfreeze_every}.")
        epoch = 0
        for k in range(len(adapter) + 1):
            if epoch >= num_epochs:
                break
            trainable = {head} | set(adapter[len(adapter) - k:] if k else [])
            length = unfreeze_every if k < len(adapter) else num_epochs - epoch
            length = min(length, num_epochs - epoch)
            name = "head" if k == 0 else f"unfreeze {names[adapter[len(adapter) - k]]}"
            phases.append(Phase(name, epoch, length, frozenset(trainable), _lrs(n, trainable, learning_rate, decay), 0))
            epoch += length
        if epoch < num_epochs:  # pragma: no cover - the last phase always runs to the end
            raise AssertionError("gradual unfreezing plan does not cover every epoch")
    elif strategy == "chain_thaw":
        if chain_thaw_epochs < 1:
            raise ValueError(f"chain_thaw_epochs must be >= 1, got {chain_thaw_epochs}.")
        needed = chain_thaw_epochs * (len(adapter) + 1) + 1
        if num_epochs < needed:
            raise ValueError(
                f"chain_thaw over {len(adapter)} adapter groups with chain_thaw_epochs={chain_thaw_epochs} needs "
                f"num_epochs >= {needed} (head, each group alone, then all); got num_epochs={num_epochs}."
            )
        phases.append(Phase("head", 0, chain_thaw_epochs, frozenset({head}), _lrs(n, {head}, head_rate, None), 0))
        epoch = chain_thaw_epochs
        for g in adapter:
            phases.append(Phase(f"thaw {names[g]}", epoch, chain_thaw_epochs, frozenset({g}),
                                _lrs(n, {g}, learning_rate, None), len(phases)))
            epoch += chain_thaw_epochs
        every = set(range(n))
        phases.append(Phase("all", epoch, num_epochs - epoch, frozenset(every), _lrs(n, every, learning_rate, decay), len(phases)))
    else:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    return TrainingPlan(group_names=names, phases=tuple(phases), num_epochs=num_epochs)
