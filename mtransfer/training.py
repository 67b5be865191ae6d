"""Training settings and the Accelerate training loop shared by every modality.

Checkpoints and the best weights live in :mod:`mtransfer.checkpoints`, the run record every
artifact reads in :mod:`mtransfer.record`; this module is the loop.

The loop reads like Accelerate's own examples (``prepare``, ``accumulate``, ``backward``,
``gather_for_metrics``, ``save_state`` / ``load_state``). The transfer strategy enters in two
places only: at each epoch's start the plan's trainable groups are unfrozen (the others get
``requires_grad=False`` and eval mode), and one ``LambdaLR`` gives every optimizer param group
the plan's learning rate for its layer group at every step (0 while frozen).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from mtransfer.checkpoints import SAVE_CHECKPOINTS, Checkpoints, TrainerState, run_identity
from mtransfer.contrastive import PairCollator, PairDataset, cosine_pair_loss, default_num_pairs
from mtransfer.data import (BlockInputCollator, BlockInputDataset, CachedFeatureDataset, CachedFrameDataset, Collator,
                            EpochShuffleSampler, LabeledDataset, LengthGroupedBatchSampler,
                            SortedBatchSampler, collate_cached, random_padding_fraction)
from mtransfer.head_search import HEAD_WEIGHT_DECAYS, MIN_SEARCH_EXAMPLES, search_head_settings
from mtransfer.heads import tune_thresholds
from mtransfer.metrics import compute_metrics, greater_is_better
from mtransfer.model import TransferModel
from mtransfer.record import RECORD_FILE, BestEpoch, RunRecord, describe_head_choice
from mtransfer.schedules import SCHEDULES, get_schedule
from mtransfer.speech.data import check_transcript_lengths
from mtransfer.strategies import CONTRASTIVE_HEADS, HEAD_LEARNING_RATE, STRATEGIES, TrainingPlan, plan_strategy

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
TRACKERS = ("tensorboard",)


DEFAULT_LEARNING_RATE = 2e-5  # peak rate of the phases that train a pretrained backbone
SMALL_DATA = 10_000  # batchnorm_stats="auto": below this many training examples, a backbone's BN statistics stay frozen
DEFAULT_CTC_PLATEAU = 0.1  # hypotheses with fewer units than this share of the references': the all-blank plateau


def resolve_batchnorm_stats(setting: str, model: torch.nn.Module, train_size: int) -> str | None:
    """``"frozen"`` or ``"update"`` for a model whose backbone has batch norm (``"auto"``: frozen below
    :data:`SMALL_DATA` training examples), None for one without."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.adapter.modules()):
        return None
    if setting != "auto":
        return setting
    return "frozen" if train_size < SMALL_DATA else "update"


@dataclass
class TrainingArguments:
    """Every setting of a training run, checked when it is made.

    Attributes:
        output_dir: Folder for the model, checkpoints, metrics.json, plots and logs.
        show_transcripts: CTC: print a few reference / hypothesis pairs at each evaluation.
        strategy: ``frozen``, ``last_n``, ``full``, ``two_stage``, ``gradual_unfreezing`` or
            ``chain_thaw`` (see :mod:`mtransfer.strategies`).
        num_epochs: Epochs in all, over every phase of the strategy.
        learning_rate: Peak LR of the phases that train the backbone (and the head with it); None:
            :data:`DEFAULT_LEARNING_RATE` (2e-5). Under ``frozen`` and ``gradual_unfreezing`` a
            rate given here, with no ``head_learning_rate``, is also the head-only phase's rate.
        head_learning_rate: Peak LR of every head-only phase (``frozen``, and the first phase of
            ``two_stage``, ``gradual_unfreezing`` and ``chain_thaw``). None (and no
            ``learning_rate`` under ``frozen`` / ``gradual_unfreezing``): chosen on the feature
            cache before training (:mod:`mtransfer.head_search`): each of a few rates and weight
            decays trains a copy of the head on the cached features for the phase's epochs, and
            the best on the evaluation data (3-fold cross-validation of the training data without
            it) is used; the choice and every candidate's score go to the run record and the
            card. Where no cache serves the phase (``cache_features=False``, an adapter with
            modules of its own, a CTC head) it is :data:`~mtransfer.strategies.HEAD_LEARNING_RATE`.
        last_n: Top adapter groups trained by ``last_n`` and by ``two_stage``'s second stage.
        head_epochs: Epochs of ``two_stage``'s head-only stage.
        unfreeze_every: Epochs between unfreezings under ``gradual_unfreezing``.
        chain_thaw_epochs: Epochs per single-group step under ``chain_thaw``.
        contrastive_head: ``contrastive``: ``"logistic"`` (logistic regression fitted on the tuned
            backbone's cached features after the pair epochs, its regularisation by 5-fold
            cross-validation; SetFit's default) or ``"neural"`` (the head trained with the top
            groups for the last ``head_epochs`` epochs, at ``head_learning_rate``).
        contrastive_pairs: ``contrastive``: pairs per epoch, half of one class, half of two
            (:func:`mtransfer.contrastive.sample_pairs`); None: 40 per training example (SetFit's
            20 iterations of a positive and a negative pair each), at most 1,600.
        discriminative_lr_decay: LR divided by this per group going down (ULMFiT: 2.6).
        lr_schedule: ``constant``, ``linear``, ``cosine`` or ``slanted_triangular``.
        warmup_ratio: Linear warmup fraction of each schedule segment.
        stlr_cut_frac: Rising fraction of the slanted-triangular schedule.
        stlr_ratio: Peak-to-lowest ratio of the slanted-triangular schedule.
        batch_size: Training batch size per process.
        eval_batch_size: Evaluation batch size per process.
        gradient_accumulation_steps: Batches per optimizer step.
        weight_decay: AdamW weight decay (not on biases and norm weights).
        max_grad_norm: Gradient clipping norm; None to disable.
        adam_betas: AdamW betas.
        adam_epsilon: AdamW epsilon.
        mixed_precision: ``no``, ``fp16`` (CUDA) or ``bf16``.
        seed: Seeds Python, NumPy and torch, and the data order.
        metrics: Metric names (shipped or any ``evaluate`` metric); default by task.
        metric_for_best_model: Metric deciding the best epoch and early stopping (``loss``,
            ``accuracy``, ...); default: the task's first metric.
        greater_is_better: Direction of that metric; default from its name.
        early_stopping_patience: Stop after this many epochs without improvement; None: never.
        early_stopping_threshold: Least change that counts as an improvement.
        min_epochs: Early stopping does not end a run before this many epochs (a warm-up in which no
            improvement is expected: a new CTC head whose first epoch happens to score best, then sits
            on the all-blank plateau while the learning rate rises). The best epoch is tracked
            throughout. Like Keras' ``start_from_epoch`` and Lightning's ``min_epochs``.
        ctc_plateau: CTC: an epoch whose hypotheses hold fewer than this fraction of the reference
            units (``eval_length_ratio``; 0 when every hypothesis is empty) is on CTC's all-blank
            plateau. Such an epoch is never the best one, whatever its CER (an all-blank model
            scores 1.0 and one emitting a few frequent symbols a little less, better than many
            models that have started to learn), and it never counts toward patience: patience
            runs only on epochs off the plateau (also after a run fell onto it from an early
            garbage-emitting epoch). A run that never leaves it ends with its last weights and the ``all_blank``
            flag. None: off (every epoch competes on the metric alone).
        load_best_model_at_end: End with the best epoch's weights (needs evaluation data).
        batchnorm_stats: The running statistics of a backbone's batch-norm layers while it trains:
            ``"frozen"`` (kept as pretrained: the layers normalise with them, their scale and shift
            still train), ``"update"`` (they follow each batch, PyTorch's default) or ``"auto"``
            (frozen when the training set is small, under :data:`SMALL_DATA` examples: statistics
            of a few small batches replace ImageNet's, and the loss jumps at the unfreeze; Keras'
            transfer-learning guide keeps them frozen always). Backbones without batch norm
            (transformers' text and speech encoders, ViT) are unaffected. The choice is in the run
            record.
        save_checkpoints: Which checkpoints a run keeps on disk (one is written after every epoch):
            ``"best"`` (the default): while the run goes, the latest epoch's full, resumable
            checkpoint and the best epoch's model weights (its optimizer state is dropped once a
            later epoch is saved); once it finishes, the best and the last epoch's weights alone
            (two copies of the model); ``"last"``: the latest full
            checkpoint only (the best epoch's weights are held in memory to restore at the end; a
            best epoch from before a resume cannot be restored and the run says so);
            ``"all"``: every epoch's full checkpoint (``save_total_limit`` keeps the latest N,
            and the best); ``"none"``: no checkpoints (no resume; the best weights in memory).
            ``True`` / ``False`` mean ``"best"`` / ``"none"``.
        save_total_limit: With ``save_checkpoints="all"``: full checkpoints kept (the latest ones,
            besides the best); None keeps every one.
        resume_from_checkpoint: ``"latest"`` or a checkpoint folder to resume from. Resuming loads
            Accelerate's random-number-generator states, stored with pickle: resume only from
            checkpoints you trust (your own runs').
        overwrite_output_dir: Start a new run in a folder that holds an earlier run's checkpoints,
            removing them; without it such a run is refused (resume it, or pick another folder).
        tune_thresholds: Multi-label: pick each label's threshold on the evaluation data at the end.
        report_to: Trackers through Accelerate (``tensorboard``); empty for none.
        run_name: Name of the run for trackers; default: the output folder's name.
        logging_steps: Optimizer steps between loss logs and progress-bar updates.
        num_threads: Torch intra-op threads (``torch.set_num_threads``); None keeps torch's default.
        progress_bar: Show tqdm progress bars (main process only); each epoch's metric line is printed either way.
        cpu: Force CPU; None: CPU exactly when no CUDA device is present.
        dataloader_num_workers: Worker processes per data loader.
        group_by_length: Training batches of inputs of similar length
            (:class:`mtransfer.data.LengthGroupedBatchSampler`: shuffled, then sorted by a jittered
            length within groups of 50 batches, the batches shuffled), so that little of each batch
            is padding; the order still changes every epoch. None (the default): on for CTC (clips of
            1-6 s padded to the longest of a random batch are about a third padding), off otherwise.
            Inputs of one size (images) are never grouped. The resolved choice and the padding it
            leaves (against random batches) are in the run record (``batching``).
        plot: Write ``learning_curve.png``.
        cache_features: Head-only phases (``frozen``, the head stage of ``two_stage`` and
            ``chain_thaw``, the first phase of ``gradual_unfreezing``) train and evaluate on
            cached backbone features: one forward pass over the data, then none per epoch.
        cache_dir: Feature-cache folder (default ``$MTRANSFER_CACHE`` or ``~/.cache/mtransfer/features``).
        partial_cache_gb: Phases that train the top of the backbone while its lowest groups stay
            frozen (``last_n``, gradual unfreezing, chain-thaw) read the hidden states entering the
            lowest trainable block from the feature cache (:mod:`mtransfer.partial_cache`), when
            their estimated size (training and evaluation data) is at most this many GB; 0: never.
            Needs ``cache_features``.
        augmented_views: Cache this many augmented views of the training data (preprocessing in
            training mode) and use view ``epoch % augmented_views`` in cached epochs; 0: plain features.
        skip_bad_inputs: Leave out inputs the adapter cannot read (corrupt or missing image and
            audio files), with a warning saying how many; False stops before training and lists them.
    """

    output_dir: str = "outputs/run"
    strategy: str = "full"
    num_epochs: int = 3
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    last_n: int | None = None
    head_epochs: int = 1
    unfreeze_every: int = 1
    chain_thaw_epochs: int = 1
    contrastive_head: str = "logistic"
    contrastive_pairs: int | None = None
    discriminative_lr_decay: float | None = None
    lr_schedule: str = "linear"
    warmup_ratio: float = 0.1
    batchnorm_stats: str = "auto"
    stlr_cut_frac: float = 0.1
    stlr_ratio: float = 32.0
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    mixed_precision: str = "no"
    seed: int = 42
    metrics: list[str] | None = None
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    min_epochs: int = 0
    ctc_plateau: float | None = DEFAULT_CTC_PLATEAU
    load_best_model_at_end: bool = True
    save_checkpoints: str | bool = "best"
    save_total_limit: int | None = None
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    tune_thresholds: bool = False
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    run_name: str | None = None
    logging_steps: int = 10
    num_threads: int | None = None
    progress_bar: bool = True
    show_transcripts: bool = True
    cpu: bool | None = None
    dataloader_num_workers: int = 0
    group_by_length: bool | None = None
    plot: bool = True
    cache_features: bool = True
    cache_dir: str | None = None
    partial_cache_gb: float = 8.0
    augmented_views: int = 0
    skip_bad_inputs: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"TrainingArguments.{name}={getattr(self, name)!r}: expected {expected}.")

        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"one of {', '.join(STRATEGIES)}")
        if self.lr_schedule not in SCHEDULES:
            raise bad("lr_schedule", f"one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise bad("mixed_precision", f"one of {', '.join(MIXED_PRECISION)}")
        for name in ("num_epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "head_epochs",
                     "unfreeze_every", "chain_thaw_epochs", "logging_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "an integer >= 1")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int)
                                             or self.num_threads < 1):
            raise bad("num_threads", "an integer >= 1 or None")
        if self.augmented_views < 0:
            raise bad("augmented_views", "an integer >= 0")
        if isinstance(self.partial_cache_gb, bool) or not isinstance(self.partial_cache_gb, (int, float)) \
                or not self.partial_cache_gb >= 0:
            raise bad("partial_cache_gb", "a number of GB >= 0 (0 turns the partial-network cache off)")
        if self.dataloader_num_workers < 0:
            raise bad("dataloader_num_workers", "an integer >= 0")
        if self.group_by_length not in (None, True, False):
            raise bad("group_by_length", "True, False or None (on for CTC)")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATE
        elif self.head_learning_rate is None and self.strategy in ("frozen", "gradual_unfreezing"):
            self.head_learning_rate = self.learning_rate  # these strategies' head phase has always trained at it
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not 0 < value < 10):
                raise bad(name, "a learning rate > 0 (and < 10)")
        if self.last_n is not None and (not isinstance(self.last_n, int) or self.last_n < 1):
            raise bad("last_n", "an integer >= 1 or None")
        if self.strategy == "last_n" and self.last_n is None:
            raise ValueError("TrainingArguments.strategy='last_n' needs last_n (how many top layer groups train).")
        if self.strategy == "two_stage" and self.head_epochs >= self.num_epochs:
            raise ValueError(f"TrainingArguments.head_epochs={self.head_epochs} must be < num_epochs={self.num_epochs} "
                             "for strategy='two_stage' (a head stage, then a fine-tuning stage).")
        if self.discriminative_lr_decay is not None and self.discriminative_lr_decay < 1.0:
            raise bad("discriminative_lr_decay", "a factor >= 1.0 (e.g. 2.6) or None")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise bad("warmup_ratio", "a fraction in [0, 1)")
        if not 0.0 < self.stlr_cut_frac < 1.0:
            raise bad("stlr_cut_frac", "a fraction in (0, 1)")
        if self.stlr_ratio < 1.0:
            raise bad("stlr_ratio", "a ratio >= 1")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a value >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise bad("max_grad_norm", "a norm > 0 or None")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise bad("early_stopping_patience", "an integer >= 1 or None")
        if isinstance(self.min_epochs, bool) or not isinstance(self.min_epochs, int) or self.min_epochs < 0:
            raise bad("min_epochs", "an integer >= 0")
        if self.min_epochs > self.num_epochs:
            raise bad("min_epochs", f"at most num_epochs ({self.num_epochs})")
        if self.ctc_plateau is not None and (isinstance(self.ctc_plateau, bool) or not 0.0 < self.ctc_plateau < 1.0):
            raise bad("ctc_plateau", "a fraction in (0, 1) or None")
        if self.contrastive_head not in CONTRASTIVE_HEADS:
            raise bad("contrastive_head", f"one of {', '.join(CONTRASTIVE_HEADS)}")
        if self.contrastive_pairs is not None and (isinstance(self.contrastive_pairs, bool)
                                                   or not isinstance(self.contrastive_pairs, int) or self.contrastive_pairs < 2):
            raise bad("contrastive_pairs", "an integer >= 2 or None")
        if self.strategy == "contrastive" and self.contrastive_head == "neural" and self.head_epochs >= self.num_epochs:
            raise ValueError(f"TrainingArguments.head_epochs={self.head_epochs} must be < num_epochs={self.num_epochs} "
                             "for strategy='contrastive' with contrastive_head='neural' (pair epochs, then head epochs).")
        if self.batchnorm_stats not in ("auto", "frozen", "update"):
            raise bad("batchnorm_stats", "'auto', 'frozen' or 'update'")
        if isinstance(self.save_checkpoints, bool):
            self.save_checkpoints = "best" if self.save_checkpoints else "none"
        if self.save_checkpoints not in SAVE_CHECKPOINTS:
            raise bad("save_checkpoints", f"one of {', '.join(SAVE_CHECKPOINTS)} (or true / false)")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise bad("save_total_limit", "an integer >= 1 or None")
        self.adam_betas = tuple(self.adam_betas)
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise bad("adam_betas", "two numbers in [0, 1)")
        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to in ("none", "") else [self.report_to]
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise bad("report_to", f"a list of trackers from {', '.join(TRACKERS)}")
        if self.mixed_precision == "fp16" and (self.cpu or not torch.cuda.is_available()):
            raise ValueError("TrainingArguments.mixed_precision='fp16' needs a CUDA GPU; on CPU use 'bf16' or 'no'.")
        if self.metrics is not None:
            self.metrics = list(self.metrics)

    @property
    def checkpointing(self) -> bool:
        """Whether the run writes checkpoints (every ``save_checkpoints`` but ``"none"``)."""
        return self.save_checkpoints != "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


class TrainerCallback:
    """Hooks into :class:`Trainer`; override the ones you need. ``trainer.state`` holds the progress."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, batch: dict[str, Any]) -> None: ...
    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, record: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    """What a run produced."""

    history: list[dict[str, Any]]
    best_epoch: int | None
    best_metric: str | None
    best_value: float | None
    final_metrics: dict[str, float]
    output_dir: str
    model_dir: str
    metrics_path: str
    plot_path: str | None
    stopped_early: bool = False
    train_seconds: float = 0.0
    weights_epoch: int | None = None
    flags: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"TrainResult(output_dir={self.output_dir!r}, best_epoch={self.best_epoch}, "
                 f"{self.best_metric}={self.best_value if self.best_value is None else round(self.best_value, 4)}, "
                 f"stopped_early={self.stopped_early}, train_seconds={self.train_seconds:.1f})"]
        for rec in self.history:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k not in ("lr",)}
            lines.append(f"  {shown}")
        return "\n".join(lines)


def fused_adamw_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters (floating point, on CPU or CUDA). It updates
    every tensor in one kernel: on 2 CPU cores 14 ms a step for MiniLM-L6's 22.7 M parameters against 72 ms
    for the per-tensor loop torch uses on CPUs by default (``scripts/bench_finetune_epoch.py``); the same
    update up to float rounding."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _accelerator(args: TrainingArguments):
    """An Accelerator for a run; several runs in one process share Accelerate's process state.

    Accelerate fixes the device and precision once per process, so bf16 is applied by the
    trainer's own ``torch.autocast`` (see :meth:`Trainer._autocast`) and a notebook can train
    fp32 and bf16 models one after the other; only fp16 (which needs Accelerate's gradient
    scaler) is given to Accelerate.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cpu = args.cpu if args.cpu is not None else not torch.cuda.is_available()
    try:
        return Accelerator(
            cpu=cpu,
            mixed_precision="fp16" if args.mixed_precision == "fp16" else "no",
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=list(args.report_to) or None,
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
        )
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        raise ValueError(f"TrainingArguments.mixed_precision={args.mixed_precision!r} / cpu={args.cpu!r}: an earlier run in "
                         "this process set Accelerate's device and fp16 setting, which cannot change within one process; "
                         "run this one in a new process (or keep the earlier settings).") from None


def _data_fingerprint(adapter: Any, dataset: LabeledDataset | None) -> str:
    import hashlib

    if dataset is None:
        return ""
    h = hashlib.sha256(adapter.input_fingerprint(dataset.inputs).encode())
    if dataset.targets is not None:
        h.update(dataset.targets.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Trainer:
    """Fine-tune a :class:`TransferModel` under a transfer strategy, on one or many processes.

    Checks the data against the model and the strategy against its layer groups when it is
    made, so a bad setting fails before any training.

    >>> trainer = Trainer(model, TrainingArguments(output_dir="out", strategy="two_stage"),  # doctest: +SKIP
    ...                   train_dataset=train, eval_dataset=valid)
    >>> result = trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model: TransferModel, args: TrainingArguments, train_dataset: LabeledDataset | None = None,
                 eval_dataset: LabeledDataset | None = None, callbacks: Sequence[TrainerCallback] = ()) -> None:
        self.model = model
        self.args = args
        self.callbacks = list(callbacks)
        self.state = TrainerState()
        self.skipped_inputs: dict[str, list[int]] = {}
        self._readable: set[int] = set()  # datasets already read once by _drop_bad
        if args.skip_bad_inputs:
            train_dataset = self._drop_bad(train_dataset, "train_dataset")
            eval_dataset = self._drop_bad(eval_dataset, "eval_dataset")
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        for ds, role in ((train_dataset, "train_dataset"), (eval_dataset, "eval_dataset")):
            if ds is not None:
                self._check_dataset(ds, role)
        self._choose_metrics()
        self._check_contrastive()
        self.group_names = [g.name for g in model.layer_groups()]  # labels; groups are held by position
        self.plan: TrainingPlan = self._plan(args.head_learning_rate)
        self.accelerator = None
        self.optimizer = None
        self.scheduler = None
        self.unwrapped: TransferModel = model
        self._show = False  # progress bars on this process (set when training starts)
        self.feature_cache = None
        self._cached: dict[Any, Any] = {}
        self._blocks: dict[int, int | None] = {}  # phase start epoch -> the block whose cached input serves it
        self.partial_cache: list[dict[str, Any]] = []  # per phase that could read one: what it read, or why not
        self._lengths: dict[int, tuple[Any, list[int] | None]] = {}  # per dataset: lengths for length-grouped batches
        self.batching: dict[str, Any] | None = None  # the training batches: grouped by length or not, and the padding
        self._best_state: dict[str, torch.Tensor] | None = None
        self.head_choice: dict[str, Any] | None = None  # how the head-only phase's rate was set (head_search)
        self.linear_head: dict[str, Any] | None = None  # contrastive: the logistic head fitted after the pair epochs

    def _choose_metrics(self) -> None:
        args, eval_dataset = self.args, self.eval_dataset
        task = self.model.head.kind
        self.metric_names = list(args.metrics or task.metrics)
        if task.transcribes:  # one pass gives every error rate; PER exists for phone vocabularies
            self.metric_names = ["wer", "cer"] + (["per"] if self.model.vocabulary.kind == "phones" else [])
        best = args.metric_for_best_model or (self.metric_names[0] if eval_dataset is not None else "loss")
        self.best_metric = "eval_" + best.removeprefix("eval_")
        if eval_dataset is not None and best.removeprefix("eval_") not in (*self.metric_names, "loss"):
            raise ValueError(f"TrainingArguments.metric_for_best_model={best!r} is not computed; "
                             f"expected 'loss' or one of metrics {self.metric_names}.")
        self.greater_is_better = args.greater_is_better if args.greater_is_better is not None else greater_is_better(best)
        if args.early_stopping_patience is not None and eval_dataset is None:
            raise ValueError("TrainingArguments.early_stopping_patience needs an eval_dataset to watch.")
        if args.tune_thresholds and (not task.multi_label or eval_dataset is None):
            raise ValueError("TrainingArguments.tune_thresholds is for multi-label classification with an eval_dataset.")

    def _plan(self, head_learning_rate: float | None) -> TrainingPlan:
        """The strategy's plan over this model's groups, its head-only phases at ``head_learning_rate``."""
        args = self.args
        return plan_strategy(
            args.strategy, self.group_names, num_epochs=args.num_epochs, learning_rate=args.learning_rate,
            head_learning_rate=head_learning_rate, last_n=args.last_n, head_epochs=args.head_epochs,
            unfreeze_every=args.unfreeze_every, chain_thaw_epochs=args.chain_thaw_epochs,
            discriminative_lr_decay=args.discriminative_lr_decay, contrastive_head=args.contrastive_head)

    def _check_contrastive(self) -> None:
        """``contrastive`` builds pairs from class labels, and its logistic head is a linear layer."""
        args, head = self.args, self.model.head
        if args.strategy != "contrastive":
            return
        if head.task != "single_label_classification":
            raise ValueError(f"strategy='contrastive' builds its pairs from class labels: it needs single-label "
                             f"classification, not {head.task}.")
        if args.contrastive_head == "logistic" and head.config.hidden_sizes:
            raise ValueError(f"contrastive_head='logistic' fits a linear head; this model's head has hidden layers "
                             f"{head.config.hidden_sizes} (use contrastive_head='neural', or a linear head).")

    def _drop_bad(self, ds: LabeledDataset | None, role: str) -> LabeledDataset | None:
        """The dataset without the inputs the adapter cannot read, saying how many were skipped."""
        if ds is None:
            return None
        bad = self.model.adapter.find_bad_inputs(ds.inputs)
        if not bad:
            self._readable.add(id(ds))
            return ds
        if len(bad) == len(ds):
            raise ValueError(f"{role} ({ds.source}): all {len(ds)} inputs are unreadable, e.g. {bad[0][1]}")
        skipped = {i for i, _ in bad}
        logger.warning("%s (%s): skipping %d of %d unreadable inputs (skip_bad_inputs=True); first: %s",
                       role, ds.source, len(bad), len(ds), bad[0][1])
        self.skipped_inputs[role] = [i for i, _ in bad]
        kept = ds.subset([i for i in range(len(ds)) if i not in skipped])
        self._readable.add(id(kept))
        return kept

    def _check_dataset(self, ds: LabeledDataset, role: str) -> None:
        if len(ds) == 0:
            raise ValueError(f"{role} ({ds.source}) is empty.")
        if ds.targets is None:
            raise ValueError(f"{role} ({ds.source}) has no labels; load it with a label_column.")
        if ds.task != self.model.task:
            raise ValueError(f"{role} ({ds.source}) is labelled for {ds.task!r} but the model's head does {self.model.task!r}.")
        task = self.model.head.kind
        if task.has_class_names and list(ds.label_names) != list(self.model.label_names):
            raise ValueError(f"{role} ({ds.source}) has labels {ds.label_names[:10]} but the model was built for "
                             f"{self.model.label_names[:10]}; load it with label_names=model.label_names.")
        if task.transcribes and ds.references is None:
            raise ValueError(f"{role} ({ds.source}) has CTC targets but no reference transcripts; load it with "
                             "mt.load_labeled(..., task='ctc').")
        if not task.has_class_names and ds.targets.shape[1] != self.model.head.config.num_outputs:
            raise ValueError(f"{role} ({ds.source}) has {ds.targets.shape[1]} regression targets but the head has "
                             f"{self.model.head.config.num_outputs} outputs.")
        if id(ds) not in self._readable:
            from mtransfer.media import SKIP_HINT

            self.model.adapter.validate_inputs(ds.inputs, source=f"{role} ({ds.source})", hint=SKIP_HINT)
            if task.transcribes:
                check_transcript_lengths(self.model.adapter, ds, f"{role} ({ds.source})")

    # --- learning rates -----------------------------------------------------------------
    def lr_lambda(self, group_index: int, epoch_steps: Sequence[int]):
        """``step -> learning rate`` of one layer group (by position) under the plan and the schedule.

        ``epoch_steps`` holds each epoch's optimizer steps (a contrastive epoch of pairs has its own count).
        """
        import bisect

        plan, args = self.plan, self.args
        schedules: dict[int, Any] = {}
        starts = [0]
        for n in epoch_steps:
            starts.append(starts[-1] + n)

        def lr_at(step: int) -> float:
            epoch = min(bisect.bisect_right(starts, step) - 1, plan.num_epochs - 1)
            phase = plan.phase_at(epoch)
            peak = phase.peak_lrs[group_index]
            if peak == 0.0:
                return 0.0
            start, length = plan.segment_bounds(phase.segment)
            total = starts[start + length] - starts[start]
            if phase.segment not in schedules:
                schedules[phase.segment] = get_schedule(args.lr_schedule, warmup_ratio=args.warmup_ratio, total_steps=total,
                                                        stlr_cut_frac=args.stlr_cut_frac, stlr_ratio=args.stlr_ratio)
            return peak * schedules[phase.segment](step - starts[start], total)

        return lr_at

    # --- main loop ----------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Train under the plan; return the :class:`TrainResult` (the run record is in ``metrics.json``)."""
        from accelerate.utils import set_seed

        from mtransfer.locks import output_lock

        args = self.args
        if self.train_dataset is None:
            raise ValueError("Trainer.train needs a train_dataset.")
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        accelerator = self.accelerator = _accelerator(args)
        if accelerator.is_local_main_process:  # the first line of a run: what it runs on
            from tqdm.auto import tqdm

            tqdm.write(f"training on {accelerator.num_processes} process(es) x {torch.get_num_threads()} torch "
                       f"thread(s), {accelerator.device.type} (TrainingArguments.num_threads sets the threads)")
        with output_lock(args.output_dir, accelerator):
            set_seed(args.seed)
            model, optimizer, train_dl, eval_dl = self._prepare()
            self._start()
            start = time.perf_counter()
            for epoch in range(self.state.epoch + 1, args.num_epochs):
                if self.state.stopped_early:
                    break
                model = self._wrap_for_phase(model, self.plan.phase_at(epoch).trainable)
                if args.checkpointing and self.state.best_epoch is not None:  # its left-out parameters may now train
                    self.checkpoints.complete(self.state.best_epoch, self.unwrapped, self._untrained_parameters(epoch))
                record = self._train_epoch(model, optimizer, train_dl, eval_dl, epoch)
                self._end_epoch(record, epoch)
            return self._finish(model, eval_dl, time.perf_counter() - start)

    def _prepare(self):
        """Data loaders, the optimizer (param groups by layer-group position) and the LR scheduler, prepared."""
        from torch.utils.data import DataLoader

        from mtransfer.strategies import optimizer_param_groups

        args, model, accelerator = self.args, self.model, self.accelerator
        if not model.head.kind.has_class_names:  # regression: the head learns standardised targets
            model.head.set_target_stats(self.train_dataset.targets)
        loaders = [DataLoader(self.train_dataset, **self._batching(self.train_dataset),
                              collate_fn=Collator(model.adapter, training=True), num_workers=args.dataloader_num_workers)]
        if self.eval_dataset is not None:
            loaders.append(DataLoader(self.eval_dataset, **self._eval_batching(self.eval_dataset), shuffle=False,
                                      collate_fn=Collator(model.adapter), num_workers=args.dataloader_num_workers))
        self.pair_dataset = None
        if any(ph.objective == "pairs" for ph in self.plan.phases):  # the pairs are drawn anew each epoch
            self.pair_dataset = PairDataset(self.train_dataset.inputs, self.train_dataset.targets,
                                            args.contrastive_pairs or default_num_pairs(len(self.train_dataset)),
                                            args.seed)
            loaders.append(DataLoader(self.pair_dataset, batch_size=args.batch_size, shuffle=False,
                                      collate_fn=PairCollator(model.adapter), num_workers=args.dataloader_num_workers))
        model.set_trainable(range(len(self.group_names)))  # the optimizer holds every group; phases toggle them
        groups = optimizer_param_groups(model, args.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=1.0, betas=args.adam_betas, eps=args.adam_epsilon,
                                      fused=fused_adamw_supported(groups) or None)
        model, optimizer, *loaders = accelerator.prepare(model, optimizer, *loaders)
        self.optimizer, self.unwrapped = optimizer, accelerator.unwrap_model(model)
        self._registered = tuple(range(len(self.group_names)))
        self.pair_dl = loaders.pop() if self.pair_dataset is not None else None
        steps = {name: max(1, math.ceil(len(dl) / args.gradient_accumulation_steps))
                 for name, dl in (("task", loaders[0]), ("pairs", self.pair_dl)) if dl is not None}
        self.epoch_steps = [steps[self.plan.phase_at(e).objective] for e in range(self.plan.num_epochs)]
        self._make_scheduler()
        return model, optimizer, loaders[0], (loaders[1] if len(loaders) > 1 else None)

    def _make_scheduler(self) -> None:
        """The ``LambdaLR`` that gives every param group its layer group's rate under the plan."""
        base = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            base, [self.lr_lambda(g["layer_group"], self.epoch_steps) for g in base.param_groups])

    # --- the head-only phase's rate -----------------------------------------------------
    def _head_rate_open(self) -> bool:
        """The plan starts head-only and the user gave that phase no rate (TrainingArguments.head_learning_rate)."""
        return self.args.head_learning_rate is None and self._head_only(self.plan.phases[0])

    def _no_search_reason(self) -> str | None:
        """Why the head rate cannot be chosen on cached features here, or None."""
        if self.unwrapped.head.kind.reads_frames:
            return "a CTC head is not searched"
        if not self._use_cache(self.plan.phases[0]):
            return ("cache_features=False" if not self.args.cache_features
                    else "the adapter trains modules of its own in head-only phases, so no feature cache serves them")
        if len(self.train_dataset) < MIN_SEARCH_EXAMPLES:
            return f"fewer than {MIN_SEARCH_EXAMPLES} training examples"
        return None

    def _settle_head_settings(self, recorded: dict[str, Any] | None) -> None:
        """Choose the head-only phase's rate and weight decay (or take the checkpoint's choice), then re-plan."""
        self.head_choice = None
        if not self._head_rate_open():
            return
        args = self.args
        if recorded is None:
            reason = self._no_search_reason()
            recorded = ({"learning_rate": HEAD_LEARNING_RATE, "weight_decay": args.weight_decay, "searched": False,
                         "reason": reason} if reason else self._search_head())
        self.head_choice = self.state.head_search = recorded
        self.plan = self._plan(recorded["learning_rate"])
        head = len(self.group_names) - 1
        base = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        for group in base.param_groups:
            if group["layer_group"] == head and group["weight_decay"] > 0:
                group["weight_decay"] = recorded["weight_decay"]
        self._make_scheduler()
        if self.accelerator.is_local_main_process:
            tqdm_write(describe_head_choice(recorded))

    def _search_head(self) -> dict[str, Any]:
        """Run :func:`~mtransfer.head_search.search_head_settings` on the cached features (main process; broadcast)."""
        from accelerate.utils import broadcast_object_list

        args, accelerator, plan = self.args, self.accelerator, self.plan
        phase = plan.phases[0]
        views = list(range(1, args.augmented_views + 1)) or [0]
        train = [self._cache_entry(self.train_dataset, v) for v in views[:phase.num_epochs]]
        evaluation = self._cache_entry(self.eval_dataset, 0) if self.eval_dataset is not None else None
        choice: list[Any] = [None]
        if accelerator.is_main_process:
            device = accelerator.device
            length = plan.segment_bounds(phase.segment)[1]
            schedules: dict[int, Any] = {}  # one per fold size

            def multiplier(step: int, steps_per_epoch: int) -> float:
                total = length * steps_per_epoch
                if total not in schedules:
                    schedules[total] = get_schedule(args.lr_schedule, warmup_ratio=args.warmup_ratio, total_steps=total,
                                                    stlr_cut_frac=args.stlr_cut_frac, stlr_ratio=args.stlr_ratio)
                return schedules[total](step, total)

            best_name = self.best_metric.removeprefix("eval_")
            metric = best_name if best_name != "loss" else self.metric_names[0]
            greater = self.greater_is_better if best_name != "loss" else greater_is_better(metric)
            result = search_head_settings(
                self.unwrapped.head, [e.all().to(device) for e in train], self.train_dataset.targets.to(device),
                eval_features=evaluation.all().to(device) if evaluation is not None else None,
                eval_labels=self.eval_dataset.targets.to(device) if evaluation is not None else None,
                epochs=phase.num_epochs,
                batch_size=args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes,
                multiplier=multiplier, metric=metric, greater_is_better=greater, seed=args.seed,
                weight_decays=(args.weight_decay, *HEAD_WEIGHT_DECAYS), betas=args.adam_betas, eps=args.adam_epsilon,
                max_grad_norm=args.max_grad_norm)
            choice = [result.to_dict()]
        if accelerator.num_processes > 1:
            broadcast_object_list(choice, from_process=0)
        return choice[0]

    def _wrap_for_phase(self, model, trainable: Sequence[int]):
        """Under DDP, a wrapper that registers exactly the phase's trainable groups.

        DDP syncs the parameters that required grad when it was built, and without
        ``find_unused_parameters`` every one of them must get a gradient each step. Adapters leave
        their unused parameters (a BERT pooler under mean pooling) out of the layer groups, so a
        wrapper rebuilt at each change of phase never needs the extra graph traversal (nor warns
        that it was not needed). Outside DDP the model is returned as is.
        """
        from accelerate.utils import DistributedType
        from torch.nn.parallel import DistributedDataParallel

        accelerator = self.accelerator
        trainable = tuple(trainable)
        if trainable == self._registered or not isinstance(model, DistributedDataParallel):
            return model
        self.unwrapped.set_trainable(trainable)
        handler = accelerator.ddp_handler.to_kwargs() if accelerator.ddp_handler is not None else {}
        on_gpu = accelerator.distributed_type == DistributedType.MULTI_GPU
        ids = [accelerator.local_process_index] if on_gpu else None
        wrapped = DistributedDataParallel(self.unwrapped, device_ids=ids, output_device=ids[0] if ids else None,
                                          **{**handler, "find_unused_parameters": False})
        self._registered = trainable
        return wrapped

    def _start(self) -> None:
        """A fresh state, or the checkpoint's after checking it belongs to this run; trackers; callbacks."""
        args, accelerator = self.args, self.accelerator
        self.batchnorm_stats = resolve_batchnorm_stats(args.batchnorm_stats, self.unwrapped, len(self.train_dataset))
        self.unwrapped.frozen_norm_stats = self.batchnorm_stats == "frozen"
        adapter = self.unwrapped.adapter
        model_config = {k: v for k, v in self.unwrapped.get_config().items() if k != "mtransfer_version"}
        identity = run_identity(args.to_dict(), model_config,
                                {"train": _data_fingerprint(adapter, self.train_dataset),
                                 "eval": _data_fingerprint(adapter, self.eval_dataset)})
        self.checkpoints = Checkpoints(args.output_dir, accelerator, identity, args.save_total_limit,
                                       keep=args.save_checkpoints)
        self._best_state = None
        if args.resume_from_checkpoint:
            self.state = self.checkpoints.resume(args.resume_from_checkpoint, self.unwrapped)
            self._settle_head_settings(self.state.head_search)  # the rate the run chose when it started
            sched = self.scheduler.state_dict()  # the schedule is a pure function of the step: no pickled state
            sched["last_epoch"] = self.state.global_step - 1
            self.scheduler.load_state_dict(sched)
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
        else:
            self.state = TrainerState()
            if args.checkpointing:
                self.checkpoints.start_fresh(args.overwrite_output_dir)
            self._settle_head_settings(None)
        if args.report_to:
            accelerator.init_trackers(args.run_name or Path(args.output_dir).name, config=_tracker_config(args))
        self._show = args.progress_bar and accelerator.is_local_main_process
        for cb in self.callbacks:
            cb.on_train_begin(self)

    def _train_epoch(self, model, optimizer, train_dl, eval_dl, epoch: int) -> dict[str, Any]:
        """One epoch of the plan's phase: unfreeze its groups, train, evaluate; the epoch's record."""
        phase = self.plan.phase_at(epoch)
        self.unwrapped.set_trainable(phase.trainable)
        loss_of = None
        if phase.objective == "pairs":  # pooled features of pairs; no head, nothing to evaluate yet
            self.pair_dataset.set_epoch(epoch)
            train_dl, eval_dl, loss_of = self.pair_dl, None, _pair_loss
        elif self._use_cache(phase):
            train_dl, eval_dl = self._cached_loaders(epoch)
        elif (block := self._partial_block(phase)) is not None:
            train_dl, eval_dl = self._block_loaders(phase, block)
        model.train()
        train_dl.set_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        epoch_start = time.perf_counter()
        train_loss = self._run_batches(model, optimizer, train_dl, f"epoch {epoch + 1}/{self.args.num_epochs} [{phase.name}]",
                                       loss_of)
        lrs = self.scheduler.get_last_lr()
        groups = (optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer).param_groups
        record: dict[str, Any] = {"epoch": epoch + 1, "phase": phase.name, "train_loss": train_loss,
                                  "lr": {self.group_names[g["layer_group"]]: lr for g, lr in zip(groups, lrs)},
                                  "seconds": time.perf_counter() - epoch_start}
        if eval_dl is not None:
            metrics = self._evaluate(model, eval_dl)
            record.update(metrics)
            for cb in self.callbacks:
                cb.on_evaluate(self, metrics)
        return record

    def _run_batches(self, model, optimizer, dataloader, desc: str, loss_of: Any = None) -> float:
        """The inner loop: accumulate, backward, clip, step; mean training loss over the processes.

        ``loss_of(model, batch)`` replaces the task's loss (the contrastive pair loss).
        """
        from tqdm.auto import tqdm

        args, accelerator = self.args, self.accelerator
        loss_sum = torch.zeros((), device=accelerator.device)
        window, window_batches, batches = torch.zeros((), device=accelerator.device), 0, 0
        bar = tqdm(total=len(dataloader), desc=desc, disable=not self._show, leave=False, dynamic_ncols=True)
        for batch in dataloader:
            with accelerator.accumulate(model):
                with self._autocast():
                    if loss_of is not None:
                        loss = loss_of(model, batch)
                    else:
                        loss = model(batch.get("inputs"), batch["labels"], features=batch.get("features"),
                                     frame_mask=batch.get("frame_mask"), block_input=batch.get("block_input"),
                                     block_index=batch.get("block_index")).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if args.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    for cb in self.callbacks:
                        cb.on_before_optimizer_step(self)
                optimizer.step()
                if accelerator.sync_gradients:
                    self.scheduler.step()
                    self.state.global_step += 1
                optimizer.zero_grad(set_to_none=True)
            loss = loss.detach()
            loss_sum += loss
            window += loss
            window_batches += 1
            batches += 1
            bar.update(1)
            for cb in self.callbacks:
                cb.on_step_end(self, batch)
            if accelerator.sync_gradients and self.state.global_step % args.logging_steps == 0:
                self._log_loss((window / window_batches).item(), bar)
                window.zero_()
                window_batches = 0
        bar.close()
        return accelerator.reduce(loss_sum / max(1, batches), reduction="mean").item()

    def _autocast(self):
        """bf16 autocast on the run's device when ``mixed_precision='bf16'``; fp16 is Accelerate's."""
        import contextlib

        if self.args.mixed_precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16)

    def _log_loss(self, loss: float, bar: Any) -> None:
        """Every ``logging_steps`` optimizer steps: the mean loss since the last log, to the bar and the trackers."""
        if self._show:
            bar.set_postfix(loss=f"{loss:.4f}")
        if self.args.report_to:
            self.accelerator.log({"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[-1]},
                                 step=self.state.global_step)

    def _end_epoch(self, record: dict[str, Any], epoch: int) -> None:
        from tqdm.auto import tqdm

        args = self.args
        self._track_best(record)
        self.state.history.append(record)
        self.state.epoch = epoch
        if args.report_to:
            self.accelerator.log({k if k.startswith("eval_") else f"epoch/{k}": v for k, v in record.items()
                                  if isinstance(v, (int, float)) and k != "epoch"}, step=self.state.global_step)
        if self.accelerator.is_local_main_process:  # the epoch's metrics, with or without progress bars
            shown = "  ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "seconds")
            tqdm.write(f"epoch {epoch + 1}/{args.num_epochs} [{record['phase']}] {shown}  ({record['seconds']:.1f}s)")
        if args.checkpointing:
            self.checkpoints.save(epoch, self.state, keep_epoch=self.state.best_epoch, model=self.unwrapped,
                                  unchanged=self._untrained_parameters(epoch))
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, record)

    def _untrained_parameters(self, epoch: int) -> list[str]:
        """State-dict keys of the parameters no epoch up to ``epoch`` (0-based) trained: still as loaded."""
        trained = set().union(*(self.plan.phase_at(e).trainable for e in range(epoch + 1)))
        changed = {id(p) for i, g in enumerate(self.unwrapped.layer_groups()) if i in trained for p in g.parameters()}
        return [n for n, p in self.unwrapped.named_parameters(remove_duplicate=False) if id(p) not in changed]

    def _head_only(self, phase) -> bool:
        return phase.trainable == frozenset({len(self.group_names) - 1})

    def _use_cache(self, phase) -> bool:
        """Cached features serve a phase that trains only the head, when the adapter has no new modules."""
        return self.args.cache_features and self._head_only(phase) and not self.unwrapped.adapter.head_modules()

    def _cache_entry(self, dataset: LabeledDataset, view: int):
        """The cached features of ``dataset`` (extracted on first use, sharded over the processes)."""
        args, accelerator = self.args, self.accelerator
        frames = self.unwrapped.head.kind.reads_frames  # a CTC head reads every frame: cache them, not a pooled vector
        return self._feature_cache().features(
            self.unwrapped.adapter, dataset.inputs, view=view, seed=args.seed, batch_size=args.eval_batch_size,
            device=accelerator.device, process_index=accelerator.process_index,
            num_processes=accelerator.num_processes, wait=accelerator.wait_for_everyone,
            progress=self._show, frames=frames)

    def _input_lengths(self, dataset: LabeledDataset) -> list[int] | None:
        """Input lengths for length-grouped batches (``group_by_length`` resolved: on for CTC), once per dataset;
        None when batches are not grouped (or the inputs are all one size)."""
        args = self.args
        group = args.group_by_length if args.group_by_length is not None else self.unwrapped.head.kind.transcribes
        if not group:
            return None
        if id(dataset) not in self._lengths:  # the dataset is kept with its lengths, so its id is not reused
            self._lengths[id(dataset)] = (dataset, self.unwrapped.adapter.input_lengths(dataset.inputs))
        return self._lengths[id(dataset)][1]

    def _batching(self, dataset: LabeledDataset) -> dict[str, Any]:
        """A training loader's batching, the same on every path (recomputing, cached features, cached block
        inputs, so that they train on the same batches): length-grouped (``group_by_length``) or shuffled."""
        args = self.args
        lengths = self._input_lengths(dataset)
        if lengths is None:
            if dataset is self.train_dataset:
                self.batching = {"group_by_length": False}
            return {"sampler": EpochShuffleSampler(len(dataset), args.seed), "batch_size": args.batch_size}
        sampler = LengthGroupedBatchSampler(lengths, args.batch_size, args.seed,
                                            num_processes=self.accelerator.num_processes)
        if dataset is self.train_dataset and self.batching is None:
            self.batching = {"group_by_length": True, "padding": round(sampler.padding_fraction(), 4),
                             "padding_random_batches": round(random_padding_fraction(lengths, args.batch_size,
                                                                                     args.seed), 4)}
        return {"batch_sampler": sampler}

    def _eval_batching(self, dataset: LabeledDataset) -> dict[str, Any]:
        """An evaluation loader's batching: with ``group_by_length``, the inputs longest first (every metric is a
        sum or mean over examples, so only the padding changes); else in dataset order."""
        lengths = self._input_lengths(dataset)
        if lengths is None:
            return {"batch_size": self.args.eval_batch_size}
        return {"batch_sampler": SortedBatchSampler(lengths, self.args.eval_batch_size)}

    def _cache_loader(self, dataset: LabeledDataset, view: int, training: bool):
        """A prepared data loader over the cached features of ``dataset`` (extracted on first use)."""
        from torch.utils.data import DataLoader

        args, accelerator = self.args, self.accelerator
        frames = self.unwrapped.head.kind.reads_frames
        entry = self._cache_entry(dataset, view)
        cached = CachedFrameDataset(entry, dataset) if frames else CachedFeatureDataset(entry, dataset.targets)
        batching = self._batching(dataset) if training else self._eval_batching(dataset)
        dl = DataLoader(cached, shuffle=False, collate_fn=collate_cached, **batching)
        return accelerator.prepare_data_loader(dl)

    def _cached_loaders(self, epoch: int):
        """Train and eval loaders over cached features for a head-only epoch (view ``epoch % augmented_views``)."""
        views = list(range(1, self.args.augmented_views + 1)) or [0]
        view = views[epoch % len(views)]
        if ("train", view) not in self._cached:
            self._cached[("train", view)] = self._cache_loader(self.train_dataset, view, training=True)
        if self.eval_dataset is not None and "eval" not in self._cached:
            self._cached["eval"] = self._cache_loader(self.eval_dataset, 0, training=False)
        return self._cached[("train", view)], self._cached.get("eval")

    def _partial_block(self, phase) -> int | None:
        """The block whose cached input serves ``phase`` (:mod:`mtransfer.partial_cache`), or None; decided once per
        phase, on the main process (broadcast), and said in one line either way."""
        from accelerate.utils import broadcast_object_list

        from mtransfer.partial_cache import check_replay, describe, recompute_reason, split_block

        if phase.start_epoch in self._blocks:
            return self._blocks[phase.start_epoch]
        args, accelerator, model = self.args, self.accelerator, self.unwrapped
        block = split_block(model.adapter, model.layer_groups(), phase.trainable) if phase.objective == "task" else None
        if block is not None:
            decision: list[Any] = [None, 0.0]
            if accelerator.is_main_process:
                why, size = recompute_reason(model.adapter, args), 0.0
                if why is None:
                    count = min(len(self.train_dataset), args.eval_batch_size)
                    sample = model.adapter.preprocess([self.train_dataset.inputs[i] for i in range(count)])
                    why, per_row = check_replay(model.adapter, {k: v.to(accelerator.device) for k, v in sample.items()},
                                                block)
                    size = per_row * (len(self.train_dataset) + (len(self.eval_dataset) if self.eval_dataset else 0))
                    if why is None and size > args.partial_cache_gb * 1e9:
                        why = f"its estimated {size / 1e9:.1f} GB exceed partial_cache_gb={args.partial_cache_gb:g}"
                decision = [why, size]
            if accelerator.num_processes > 1:
                broadcast_object_list(decision, from_process=0)
            why, size = decision
            note: dict[str, Any] = {"phase": phase.name, "block": block, "group": self.group_names[min(phase.trainable)]}
            if why is None:
                note["megabytes"] = round(size / 1e6, 1)
                line = f"phase {phase.name}: " + describe(block, len(self.train_dataset), size / 1e6)
            else:
                block, note["recomputed"] = None, why
                line = f"phase {phase.name}: the frozen blocks below {note['group']} run every epoch: {why}"
            self.partial_cache.append(note)
            if accelerator.is_local_main_process:
                tqdm_write(line)
        self._blocks[phase.start_epoch] = block
        return block

    def _block_loaders(self, phase, block: int):
        """Train and eval loaders over the cached input of ``block`` (extracted when the phase starts)."""
        key = ("block", block, phase.start_epoch)
        if key not in self._cached:
            evaluation = self._block_loader(self.eval_dataset, block, False) if self.eval_dataset is not None else None
            self._cached[key] = (self._block_loader(self.train_dataset, block, True), evaluation)
        return self._cached[key]

    def _block_loader(self, dataset: LabeledDataset, block: int, training: bool):
        from torch.utils.data import DataLoader

        args, accelerator, adapter = self.args, self.accelerator, self.unwrapped.adapter
        entry = self._feature_cache().features(
            adapter, dataset.inputs, batch_size=args.eval_batch_size, device=accelerator.device,
            process_index=accelerator.process_index, num_processes=accelerator.num_processes,
            wait=accelerator.wait_for_everyone, progress=self._show, block=block)
        batching = self._batching(dataset) if training else self._eval_batching(dataset)
        dl = DataLoader(BlockInputDataset(entry, dataset, block), shuffle=False, collate_fn=BlockInputCollator(adapter),
                        **batching)
        return accelerator.prepare_data_loader(dl)

    def _on_plateau(self, record: dict[str, Any], limit: float | None = None) -> bool:
        """A CTC evaluation whose hypotheses are (almost) all empty (``ctc_plateau``, or ``limit``)."""
        limit = limit if limit is not None else self.args.ctc_plateau
        return limit is not None and self.unwrapped.head.kind.transcribes and record.get("eval_length_ratio", 1.0) < limit

    def _flags(self, final: dict[str, float]) -> list[str]:
        """Why the run's figures may not be trusted (:data:`mtransfer.record.RUN_FLAGS`)."""
        flags = []
        if self._on_plateau(final, self.args.ctc_plateau or DEFAULT_CTC_PLATEAU):
            flags.append("all_blank")
        history, state = self.state.history, self.state
        if (self.args.early_stopping_patience and not state.stopped_early and history and state.best_epoch is not None
                and state.best_epoch == history[-1]["epoch"] == self.args.num_epochs):
            flags.append("improving_at_cap")
        return flags

    def _track_best(self, record: dict[str, Any]) -> None:
        args, state = self.args, self.state
        if self.eval_dataset is None or self.best_metric not in record:  # no metric: a contrastive epoch
            return
        if self._on_plateau(record):
            # not a candidate, and no evidence of a stall: patience waits while the model sits on the plateau (a
            # random-init run often emits garbage for an epoch or two, scores below the plateau's 1.0, and then
            # spends tens of epochs on the plateau before it learns; counting those epochs ended such runs there)
            record["on_plateau"] = True
            return
        value, best = record[self.best_metric], state.best_value
        sign = 1.0 if self.greater_is_better else -1.0
        if best is None or sign * (value - best) > args.early_stopping_threshold:
            state.best_value, state.best_epoch = float(value), record["epoch"]
            state.epochs_without_improvement = 0
            if args.load_best_model_at_end and args.save_checkpoints in ("none", "last"):  # none on disk to restore
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.unwrapped.state_dict().items()}
            return
        state.epochs_without_improvement += 1
        if (args.early_stopping_patience and state.epochs_without_improvement >= args.early_stopping_patience
                and record["epoch"] >= args.min_epochs):
            state.stopped_early = True

    def _restore_best(self) -> None:
        """Put the best epoch's weights back into the live model, in place."""
        if self._best_state is not None:
            self.unwrapped.load_state_dict(self._best_state)
            self._best_state = None
        elif self.args.save_checkpoints == "last" and not self.checkpoints.has_weights(self.state.best_epoch):
            self.accelerator.print(f"note: the best epoch ({self.state.best_epoch}) came before the resume and "
                                   "save_checkpoints='last' kept no copy of its weights: the run ends with the last "
                                   "epoch's weights")
        else:
            self.checkpoints.restore_weights(self.unwrapped, self.state.best_epoch)

    def _finish(self, model, eval_dl, train_seconds: float) -> TrainResult:
        args, accelerator, unwrapped = self.args, self.accelerator, self.unwrapped
        out_dir = Path(args.output_dir)
        weights_epoch = self.state.history[-1]["epoch"] if self.state.history else None
        use_best = self.eval_dataset is not None and args.load_best_model_at_end and self.state.best_epoch is not None
        if use_best and self.state.best_epoch != weights_epoch:
            self._restore_best()
        weights_epoch = self.state.best_epoch if use_best else weights_epoch
        if self.plan.phases[-1].objective == "pairs":  # contrastive, logistic head: fitted on the tuned features
            self._fit_linear_head()
        final = self._final_eval(model, eval_dl)
        flags = self._flags(final)
        record = self._record(final, weights_epoch, use_best, train_seconds, flags)
        plot_path = None
        if accelerator.is_main_process:
            unwrapped.save_pretrained(out_dir / "model")
            if args.plot and self.state.history:
                from mtransfer.plots import plot_learning_curve

                plot_path = str(plot_learning_curve(self.state.history, out_dir / "learning_curve.png", self.best_metric))
            record.save(out_dir / RECORD_FILE)
            if args.save_checkpoints == "best":  # finished: nothing to resume, the epochs' weights are what is left
                self.checkpoints.finish()
        accelerator.wait_for_everyone()
        if args.report_to and accelerator.is_main_process:
            for tracker in accelerator.trackers:  # flush and close; the process group stays up for later evaluation
                tracker.finish()
        unwrapped.set_trainable(range(len(self.group_names)))
        unwrapped.eval()
        self.model = unwrapped
        result = TrainResult(history=self.state.history, best_epoch=self.state.best_epoch,
                             best_metric=self.best_metric if self.eval_dataset is not None else None,
                             best_value=self.state.best_value, final_metrics=final, output_dir=str(out_dir),
                             model_dir=str(out_dir / "model"), metrics_path=str(out_dir / RECORD_FILE), plot_path=plot_path,
                             stopped_early=self.state.stopped_early, train_seconds=train_seconds, weights_epoch=weights_epoch,
                             flags=flags)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _fit_linear_head(self) -> None:
        """Logistic regression on the tuned backbone's cached training features, folded into the (linear) head.

        Every process extracts its shards, then fits the same model (scikit-learn, seeded): no head to broadcast.
        """
        from mtransfer.linear import fit_linear

        self.unwrapped.eval()
        features = self._cache_entry(self.train_dataset, 0).all()
        probe = fit_linear(features, self.train_dataset.targets, task=self.unwrapped.task, kind="logistic",
                           seed=self.args.seed, num_labels=len(self.unwrapped.label_names))
        fitted = probe.to_head()
        head = self.unwrapped.head
        with torch.no_grad():
            head.out.weight.copy_(fitted.out.weight)
            head.out.bias.copy_(fitted.out.bias)
        self.linear_head = {"kind": "logistic", **probe.best_params, "fit_seconds": round(probe.fit_seconds, 3),
                            "train_examples": len(self.train_dataset)}
        if self.accelerator.is_local_main_process:
            tqdm_write(f"head: logistic regression on the tuned features of {len(self.train_dataset)} training examples "
                       f"({', '.join(f'{k}={v:.3g}' for k, v in probe.best_params.items())}, by 5-fold cross-validation)")

    def _final_eval(self, model, eval_dl) -> dict[str, float]:
        """Validation metrics of the weights the run ends with (thresholds tuned first when asked)."""
        if eval_dl is None:
            return {}
        # the backbone did not change since the cache was written when the run ends head-only
        if self._use_cache(self.plan.phases[-1]) and "eval" in self._cached:
            eval_dl = self._cached["eval"]
        if self.args.tune_thresholds:
            probs, labels = self._gather_outputs(model, eval_dl)
            self.unwrapped.head.set_thresholds(tune_thresholds(torch.sigmoid(probs), labels))
        return self._evaluate(model, eval_dl)

    def _record(self, final: dict[str, float], weights_epoch: int | None, use_best: bool, seconds: float,
                flags: list[str]) -> RunRecord:
        return RunRecord(
            args=self.args.to_dict(), plan=self.plan.describe(), layer_groups=self.group_names,
            num_processes=self.accelerator.num_processes, train_samples=len(self.train_dataset),
            eval_samples=len(self.eval_dataset) if self.eval_dataset is not None else 0, history=self.state.history,
            best=BestEpoch(self.best_metric if self.eval_dataset is not None else None, self.state.best_value,
                           self.state.best_epoch),
            final_eval=final, weights_epoch=weights_epoch, weights_are_best=use_best,
            stopped_early=self.state.stopped_early, train_seconds=seconds, flags=flags,
            batchnorm_stats=getattr(self, "batchnorm_stats", None), head_search=self.head_choice,
            linear_head=self.linear_head, partial_cache=self.partial_cache or None, batching=self.batching)

    # --- evaluation ---------------------------------------------------------------------
    def _gather_outputs(self, model, dataloader) -> tuple[torch.Tensor, torch.Tensor]:
        accelerator = self.accelerator
        model.eval()
        outputs, labels = [], []
        for batch in dataloader:
            with torch.no_grad(), self._autocast():
                out = model(batch.get("inputs"), features=batch.get("features"), block_input=batch.get("block_input"),
                            block_index=batch.get("block_index"))
            logits, targets = accelerator.gather_for_metrics((out.logits.float(), batch["labels"]))
            outputs.append(logits.cpu())
            labels.append(targets.cpu())
        return torch.cat(outputs), torch.cat(labels)

    def _evaluate_ctc(self, model, dataloader, decoder: Any = None) -> dict[str, float]:
        """WER / CER (PER for phones) from per-utterance edit counts gathered over the processes, each utterance once.

        Greedy decoding, or ``decoder`` (a :class:`~mtransfer.speech.decoding.BeamSearchDecoder`)."""
        from mtransfer.speech.ctc import edit_counts, error_rates, greedy_ids

        accelerator = self.accelerator
        unwrapped = accelerator.unwrap_model(model)
        vocab, dataset = unwrapped.vocabulary, dataloader.dataset
        model.eval()
        counts, losses, shown = [], [], []
        for batch in dataloader:
            with torch.no_grad(), self._autocast():
                out = model(batch.get("inputs"), batch["labels"], features=batch.get("features"),
                            frame_mask=batch.get("frame_mask"), block_input=batch.get("block_input"),
                            block_index=batch.get("block_index"))
            index = batch["indices"].tolist()
            refs = [dataset.references[i] for i in index]
            units = [dataset.reference_units[i] for i in index] if vocab.kind == "phones" else None
            if decoder is None:
                ids = greedy_ids(out.logits.float(), out.mask)
                hyps = [vocab.decode(x) for x in ids]
                hyp_units = [vocab.decode_units(x) for x in ids] if vocab.kind == "phones" else None
            else:
                hyps = decoder.decode(out.logits, out.mask)
                hyp_units = [decoder.units(h) for h in hyps] if vocab.kind == "phones" else None
            rows = torch.as_tensor(edit_counts(refs, hyps, units, hyp_units), device=accelerator.device)
            loss = out.loss.detach().float().expand(len(index))
            rows, loss = accelerator.gather_for_metrics((rows, loss))
            counts.append(rows.cpu())
            losses.append(loss.cpu())
            shown += list(zip(refs, hyps))[:max(0, 3 - len(shown))]
        total = torch.cat(counts).numpy()
        if accelerator.is_local_main_process and self.args.show_transcripts:
            for ref, hyp in shown:
                tqdm_write(f"  ref: {ref}\n  hyp: {hyp}")
        return {"eval_loss": float(torch.cat(losses).mean()), **{f"eval_{k}": v for k, v in error_rates(total, vocab.kind).items()},
                "eval_samples": int(len(total))}

    def _evaluate(self, model, dataloader, decoder: Any = None) -> dict[str, float]:
        head = self.accelerator.unwrap_model(model).head
        if head.kind.transcribes:
            return self._evaluate_ctc(model, dataloader, decoder)
        if decoder is not None:
            raise ValueError(f"a decoder is for CTC models; this one does {head.task}.")
        logits, labels = self._gather_outputs(model, dataloader)
        loss = head.loss(logits, labels).item()
        preds = head.predict(logits).numpy()
        refs = labels.numpy()
        metrics = compute_metrics(head.task, self.metric_names, preds, refs)
        return {"eval_loss": loss, **{f"eval_{k}": v for k, v in metrics.items()}, "eval_samples": int(len(labels))}

    def evaluate(self, dataset: LabeledDataset | None = None, decoder: Any = None) -> dict[str, float]:
        """Metrics of the model on ``dataset`` (default: the eval dataset), sharded over the processes.

        CTC models decode greedily, or with ``decoder`` (a :class:`~mtransfer.speech.decoding.BeamSearchDecoder`).
        """
        from torch.utils.data import DataLoader

        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("Trainer.evaluate needs a dataset (none given and no eval_dataset).")
        self._check_dataset(dataset, "dataset")
        if self.accelerator is None:
            self.accelerator = _accelerator(self.args)
        model = self.unwrapped = self.accelerator.unwrap_model(self.model).to(self.accelerator.device)
        if self.state.history and self._use_cache(self.plan.phases[-1]):
            # the backbone is as it was when the run's features were cached: read (and fill) the cache
            dl = self._cache_loader(dataset, 0, training=False)
        else:
            dl = self.accelerator.prepare_data_loader(DataLoader(
                dataset, **self._eval_batching(dataset), collate_fn=Collator(model.adapter),
                num_workers=self.args.dataloader_num_workers))
        return self._evaluate(model, dl, decoder)

    def _feature_cache(self):
        from mtransfer.cache import FeatureCache

        if self.feature_cache is None:
            self.feature_cache = FeatureCache(self.args.cache_dir)
        return self.feature_cache


def _pair_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The contrastive loss of a batch of pairs: one forward over the left and right inputs (DDP sees one)."""
    return cosine_pair_loss(model(batch["inputs"]).pooled, batch["pair_labels"])


def tqdm_write(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)


def _tracker_config(args: TrainingArguments) -> dict[str, Any]:
    """TensorBoard hparams accept only scalars and strings."""
    out = {}
    for k, v in args.to_dict().items():
        if isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif v is not None:
            out[k] = str(v)
    return out
