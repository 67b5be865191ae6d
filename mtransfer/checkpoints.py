"""Checkpoints of a training run: save, resume, rotation, and the best weights.

A run's checkpoints live in ``<output_dir>/checkpoints/epoch_<n>/`` (Accelerate's ``save_state``
plus ``trainer_state.json``). Each carries the run's identity (its settings, model and data
fingerprints), so resuming a different run's checkpoint is refused with the differences named,
and a new run never mixes its checkpoints with an older run's.

What stays on disk (``save_checkpoints``): ``"best"`` (the default) keeps the latest epoch's full
checkpoint, to resume from, and the best epoch's model weights alone (a full checkpoint becomes
weights-only, marked by ``weights_only.json``, once a later epoch is saved), and when the run
finishes the latest becomes weights-only too: the best and the last epoch's weights remain; ``"last"`` the latest
full checkpoint only; ``"all"`` every one (``save_total_limit``: the latest N, and the best). At
the end of a run the best epoch's weights go back into the live model in place
(:meth:`Checkpoints.restore_weights`), also after a resume; a run that keeps no copy of them on
disk holds one in memory instead. The model is never rebuilt from disk.

Parameters a run has not trained yet (the frozen backbone of a head-only phase) are left out of
its checkpoints: the checkpoint lists them with a fingerprint of their values
(``unchanged_parameters.json``), and resuming checks that the model it loads into holds the same
values before loading the rest. A frozen probe's checkpoints are then the head plus its
optimizer state. Before a phase trains parameters the best epoch's checkpoint left out, that
checkpoint is completed from the live model, whose values for them are still the untouched ones,
so the best weights can always be restored in place.

Resuming loads Accelerate's random-number-generator states, which Accelerate stores with pickle:
resume only from checkpoints you (or a run you trust) wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from mtransfer.atomic import fix_permissions
from mtransfer.weight_files import refuse_unsafe_pickles

STATE_FILE = "trainer_state.json"
MODEL_WEIGHTS = "model.safetensors"  # what Accelerate's save_state writes for the (first) model
UNCHANGED_FILE = "unchanged_parameters.json"  # parameters a checkpoint leaves out, with their fingerprint
WEIGHTS_ONLY = "weights_only.json"  # marks a checkpoint reduced to the best epoch's weights (not resumable)
SAVE_CHECKPOINTS = ("best", "last", "all", "none")  # what a run keeps on disk: TrainingArguments.save_checkpoints
_KEPT_IN_WEIGHTS_ONLY = {MODEL_WEIGHTS, STATE_FILE, UNCHANGED_FILE, WEIGHTS_ONLY}

# TrainingArguments fields that do not change what a run computes: a resumed run may differ in these
UNTRACKED_SETTINGS = frozenset({
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "progress_bar", "report_to", "run_name",
    "logging_steps", "plot", "dataloader_num_workers", "cache_dir", "save_total_limit", "save_checkpoints",
    "eval_batch_size", "num_threads", "show_transcripts", "partial_cache_gb",
})


@dataclass
class TrainerState:
    """Progress saved with every checkpoint (as ``trainer_state.json``)."""

    epoch: int = -1  # last completed epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    run_identity: dict[str, Any] = field(default_factory=dict)
    head_search: dict[str, Any] | None = None  # the head-only phase's chosen rate (mtransfer.head_search)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_identity(args_dict: dict[str, Any], model_config: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """What makes two runs the same run: settings that change the computation, the model, the data.

    Args:
        args_dict: ``TrainingArguments.to_dict()``.
        model_config: ``TransferModel.get_config()`` (adapter, head, labels).
        data: ``role -> fingerprint`` of the training and evaluation data.
    """
    settings = {k: v for k, v in args_dict.items() if k not in UNTRACKED_SETTINGS}
    return {"settings": settings, "model": _digest(model_config), "labels": model_config.get("label_names"),
            "backbone": model_config.get("adapter", {}).get("source"), "data": dict(data)}


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run identities (empty when they match)."""
    out = []
    for k in sorted(set(saved.get("settings", {})) | set(current.get("settings", {}))):
        a, b = saved.get("settings", {}).get(k), current.get("settings", {}).get(k)
        if a != b:
            out.append(f"{k} {a!r} -> {b!r}")
    if saved.get("labels") != current.get("labels"):
        out.append(f"labels {saved.get('labels')} -> {current.get('labels')}")
    if saved.get("backbone") != current.get("backbone"):
        out.append(f"backbone {saved.get('backbone')!r} -> {current.get('backbone')!r}")
    elif saved.get("model") != current.get("model") and not any(x.startswith("labels") for x in out):
        out.append("model settings (adapter or head) changed")
    for role in sorted(set(saved.get("data", {})) | set(current.get("data", {}))):
        if saved.get("data", {}).get(role) != current.get("data", {}).get(role):
            out.append(f"{role} data changed")
    return out


class _SharedTensorNote(logging.Filter):
    """Drops Accelerate's "Removed shared tensor {...}" note (kilobytes at every checkpoint of a model with tied
    weights, e.g. a sentence-transformers pipeline); safetensors' ``load_model`` restores shared tensors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def list_checkpoints(root: Path, resumable: bool = False) -> list[Path]:
    """Checkpoint folders ``epoch_<n>`` under ``root`` that hold a trainer state, oldest first (``resumable``: only
    full ones, not those reduced to the best epoch's weights)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"epoch_\d+", p.name) and (p / STATE_FILE).is_file()
             and not (resumable and (p / WEIGHTS_ONLY).is_file())]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


class Checkpoints:
    """The checkpoints of one run in ``<output_dir>/checkpoints``.

    Args:
        output_dir: The run's folder.
        accelerator: The run's Accelerator (``save_state`` / ``load_state``, process roles).
        identity: :func:`run_identity` of the run.
        limit: With ``keep="all"``: full checkpoints kept (the latest); None keeps all.
        keep: What stays on disk: one of :data:`SAVE_CHECKPOINTS` but ``"none"`` (see the module).
    """

    def __init__(self, output_dir: str | os.PathLike, accelerator: Any, identity: dict[str, Any], limit: int | None,
                 keep: str = "best") -> None:
        if keep not in SAVE_CHECKPOINTS:
            raise ValueError(f"Checkpoints(keep={keep!r}): expected one of {', '.join(SAVE_CHECKPOINTS)}.")
        self.root = Path(output_dir) / "checkpoints"
        self.accelerator = accelerator
        self.identity = identity
        self.limit = limit
        self.keep = keep
        self._digests: dict[str, str] = {}  # parameter name -> digest, for parameters not trained yet (they stay valid)

    def fingerprint(self, model: nn.Module, names: Sequence[str], cached: bool = True) -> str:
        """A digest of the values of ``model``'s tensors ``names`` (state-dict keys)."""
        state = model.state_dict()
        h = hashlib.sha256()
        for name in sorted(names):
            if name not in state:
                raise KeyError(name)
            digest = self._digests.get(name) if cached else None
            if digest is None:
                t = state[name].detach().to("cpu").contiguous().reshape(-1)
                digest = hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()
                if cached:
                    self._digests[name] = digest
            h.update(f"{name}:{digest};".encode())
        return h.hexdigest()

    def start_fresh(self, overwrite: bool) -> None:
        """Before a new (not resumed) run: refuse to mix with an older run's checkpoints, or remove them when ``overwrite``."""
        old = list_checkpoints(self.root)
        self.accelerator.wait_for_everyone()  # every process has looked before the main process removes anything
        if not old:
            return
        if not overwrite:
            raise ValueError(
                f"{self.root.parent}: holds checkpoints of an earlier run ({', '.join(p.name for p in old)}); "
                "resume it (resume_from_checkpoint='latest', --resume), pass overwrite_output_dir=True "
                "(--set overwrite_output_dir=true) to replace them, or choose another output_dir.")
        if self.accelerator.is_main_process:
            for p in old:  # only folders mtransfer wrote (epoch_<n> with a trainer state)
                shutil.rmtree(p, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def save(self, epoch: int, state: TrainerState, keep_epoch: int | None = None, model: nn.Module | None = None,
             unchanged: Sequence[str] = ()) -> Path:
        """Save a resumable checkpoint after ``epoch`` (0-based), atomically; rotate old ones.

        Args:
            epoch: The epoch just finished (0-based); the folder is ``epoch_<epoch + 1>``.
            state: The trainer state to store with it.
            keep_epoch: A (1-based) epoch whose checkpoint rotation keeps (the best one).
            model: The (unwrapped) model, needed with ``unchanged``.
            unchanged: State-dict keys of parameters the run has not trained (left out, fingerprinted).
        """
        acc = self.accelerator
        drop = set(unchanged)
        if drop and model is None:
            raise ValueError("Checkpoints.save: leaving parameters out needs the model they belong to.")
        listing = {"parameters": sorted(drop), "fingerprint": self.fingerprint(model, drop)} if drop else None

        def leave_out(models: list, weights: list, output_dir: str) -> None:
            for key in [k for k in weights[0] if k in drop]:
                del weights[0][key]

        hook = acc.register_save_state_pre_hook(leave_out) if drop else None
        final = self.root / f"epoch_{epoch + 1}"
        tmp = self.root / f".epoch_{epoch + 1}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        quiet = _SharedTensorNote()
        accelerate_log = logging.getLogger("accelerate.utils.other")
        accelerate_log.addFilter(quiet)
        try:
            acc.save_state(str(tmp), safe_serialization=True)
            acc.wait_for_everyone()  # every process has written its part (its random states) before the rename
            if acc.is_main_process:
                state.run_identity = self.identity
                (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
                if listing:
                    (tmp / UNCHANGED_FILE).write_text(json.dumps(listing, indent=1))
                fix_permissions(tmp)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        except BaseException:  # disk full, interrupted: nothing half-written stays behind
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            accelerate_log.removeFilter(quiet)
            if hook is not None:
                hook.remove()
        if acc.is_main_process:
            self._rotate(final, keep_epoch)
        acc.wait_for_everyone()
        return final

    def _rotate(self, latest: Path, keep_epoch: int | None) -> None:
        """Remove (or reduce to weights) what ``keep`` does not keep, after ``latest`` was saved."""
        found = list_checkpoints(self.root)
        best = self.root / f"epoch_{keep_epoch}" if keep_epoch is not None else None
        if self.keep == "all":
            kept = set(found[-self.limit:] if self.limit else found) | {best}
        elif self.keep == "best":
            kept = {latest, best}
        else:  # last
            kept = {latest}
        for old in found:
            if old not in kept:
                shutil.rmtree(old, ignore_errors=True)
        if self.keep == "best" and best is not None and best != latest and best.is_dir():
            reduce_to_weights(best)

    def finish(self) -> None:
        """After a run that finished: every checkpoint becomes its weights alone (nothing is left to resume; the
        optimizer and random-number states of the latest epoch are dropped). Main process only."""
        for folder in list_checkpoints(self.root):
            reduce_to_weights(folder)

    def has_weights(self, epoch: int) -> bool:
        """Whether the checkpoint of (1-based) ``epoch`` is on disk with its model weights."""
        return (self.root / f"epoch_{epoch}" / MODEL_WEIGHTS).is_file()

    def restore_weights(self, model: nn.Module, epoch: int) -> None:
        """Load the model weights of the checkpoint of (1-based) ``epoch`` into ``model`` in place."""
        from safetensors.torch import load_model

        from mtransfer.weight_files import check_safetensors

        folder = self.root / f"epoch_{epoch}"
        path = folder / MODEL_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"the best epoch's weights are missing: no {path} (was the checkpoint removed?).")
        check_safetensors(path)
        partial = self._check_unchanged(folder, model)
        load_model(model, str(path), strict=not partial, device=str(next(model.parameters()).device))

    def complete(self, epoch: int, model: nn.Module, still_unchanged: Sequence[str]) -> None:
        """Before parameters a checkpoint left out start to train: write their (untouched) values into it.

        Only the checkpoint of (1-based) ``epoch`` (the best one, which a run restores in place) is
        completed; the others stay small, and resuming from them loads a fresh backbone.
        """
        from safetensors.torch import load_file, save_file

        folder = self.root / f"epoch_{epoch}"
        listing = _read_listing(folder)
        # a collective: every process reads the listing before the main process rewrites it, and all decide alike
        self.accelerator.wait_for_everyone()
        if listing is None or set(listing["parameters"]) <= set(still_unchanged):
            return
        if self.accelerator.is_main_process:
            self._check_unchanged(folder, model)
            state = model.state_dict()
            tensors = load_file(str(folder / MODEL_WEIGHTS))
            for name in listing["parameters"]:
                tensors[name] = state[name].detach().to("cpu").clone().contiguous()
            tmp = folder / f".{MODEL_WEIGHTS}.tmp"
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, folder / MODEL_WEIGHTS)
            (folder / UNCHANGED_FILE).unlink()
            fix_permissions(folder)
        self.accelerator.wait_for_everyone()

    def _check_unchanged(self, folder: Path, model: nn.Module) -> bool:
        """Whether checkpoint ``folder`` left parameters out; if so, check ``model`` holds the values it was written against."""
        from safetensors import safe_open

        listing = _read_listing(folder)
        if listing is None:
            return False
        left_out = listing["parameters"]
        state = model.state_dict()
        unknown = [n for n in left_out if n not in state]
        if unknown:
            raise ValueError(f"{folder / UNCHANGED_FILE}: names parameters the model lacks ({', '.join(unknown[:3])}).")
        if self.fingerprint(model, left_out, cached=False) != listing["fingerprint"]:
            raise ValueError(
                f"Cannot load {folder}: it leaves out the {len(left_out)} parameters the run had not trained yet "
                "(the frozen backbone), and the model's values for them differ from the ones it was written against. "
                "Load the same backbone (same folder or Hub revision) the run started from.")
        with safe_open(str(folder / MODEL_WEIGHTS), framework="pt") as fh:
            saved = set(fh.keys())
        storages: dict[int, int] = {}
        for v in state.values():
            if v.numel():
                storages[v.untyped_storage().data_ptr()] = storages.get(v.untyped_storage().data_ptr(), 0) + 1
        shared = {k for k, v in state.items() if v.numel() and storages[v.untyped_storage().data_ptr()] > 1}
        missing = sorted(set(state) - saved - set(left_out) - shared)
        if missing:
            raise ValueError(f"{folder / MODEL_WEIGHTS}: lacks weights the checkpoint does not list as left out "
                             f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}).")
        return True

    def resolve(self, where: str) -> Path:
        if where == "latest":
            found = list_checkpoints(self.root, resumable=True)
            done = list_checkpoints(self.root)
            if not found and done:
                self.check(done[-1])  # another run's folder is named as such first
                raise ValueError(
                    f"resume_from_checkpoint='latest': the run in {self.root.parent} finished; its checkpoints hold "
                    f"the weights of epochs {', '.join(p.name.split('_')[1] for p in done)} only, so there is nothing "
                    "to resume. Start a new run there (overwrite_output_dir=True, --set overwrite_output_dir=true) or "
                    "in another output_dir.")
            if not found:
                raise FileNotFoundError(f"resume_from_checkpoint='latest': no checkpoint under {self.root}.")
            return found[-1]
        path = Path(where)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"resume_from_checkpoint={str(path)!r}: not a checkpoint folder (no {STATE_FILE}).")
        if (path / WEIGHTS_ONLY).is_file():
            raise ValueError(f"resume_from_checkpoint={str(path)!r}: holds the best epoch's weights only (no optimizer "
                             "or random-number states: save_checkpoints='best' keeps those for the latest epoch); "
                             "resume from the latest checkpoint (resume_from_checkpoint='latest', --resume).")
        return path

    def check(self, path: Path) -> TrainerState:
        """The trainer state of checkpoint ``path``, after checking it belongs to this run (before any loading)."""
        try:
            raw = json.loads((path / STATE_FILE).read_text())
            state = TrainerState(**raw)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path / STATE_FILE}: not a trainer state written by mtransfer ({err}).") from None
        diffs = identity_differences(state.run_identity, self.identity) if state.run_identity else ["no run identity saved"]
        if diffs:
            raise ValueError(f"Cannot resume from {path}: it was written by a different run ({'; '.join(diffs[:6])}). "
                             "Resume with the settings, model and data of that run, or start a new run in another "
                             "output_dir.")
        return state

    def _check_random_states(self, path: Path) -> None:
        """This process's random-number states must load: Accelerate skips a damaged file with an info-level note,
        and the resumed run then draws other numbers than the uninterrupted one would have."""
        import pickle

        from accelerate.utils import load as accelerate_load

        states = path / f"random_states_{self.accelerator.process_index}.pkl"
        try:
            accelerate_load(states, map_location="cpu")
        except pickle.UnpicklingError:
            raise ValueError(f"{states}: refused: it holds Python objects beyond the random-number states, which would "
                             "run code when loaded. Do not trust this checkpoint.") from None
        except Exception as err:  # noqa: BLE001  (missing, truncated: torch raises several types)
            raise ValueError(
                f"{states}: cannot read the random-number states ({type(err).__name__}); the file is missing or damaged. "
                f"A run resumed without them would not end as the uninterrupted run: delete {path} to resume from the "
                "checkpoint before it, or start the run again.") from None

    def resume(self, where: str, model: nn.Module) -> TrainerState:
        """Load the checkpoint (model, optimizer, scheduler, RNG states) into the run; return its trainer state.

        Args:
            where: ``"latest"`` or a checkpoint folder.
            model: The run's (unwrapped) model, checked against the parameters the checkpoint left out.
        """
        path = self.resolve(where)
        state = self.check(path)
        from mtransfer.weight_files import check_safetensors

        for f in sorted(path.glob("*.safetensors")):
            check_safetensors(f)
        partial = self._check_unchanged(path, model)
        self._check_random_states(path)
        with refuse_unsafe_pickles(path):
            self.accelerator.load_state(str(path), **({"strict": False} if partial else {}))
        self.accelerator.print(f"resumed from {path} (epoch {state.epoch + 1} done, step {state.global_step})")
        return state


def reduce_to_weights(folder: Path) -> None:
    """Make checkpoint ``folder`` the model weights (and trainer state) alone, marked not resumable: what
    ``save_checkpoints="best"`` keeps of a best epoch once a later one is saved. Removes the optimizer,
    scheduler and random-number states; the mark is written first, so an interrupted reduction is never
    taken for a full checkpoint."""
    marker = folder / WEIGHTS_ONLY
    if not marker.is_file():
        tmp = folder / f".{WEIGHTS_ONLY}.tmp"
        tmp.write_text(json.dumps({"note": "the best epoch's model weights only: restore them, do not resume from "
                                           "this folder"}))
        os.replace(tmp, marker)
    for f in folder.iterdir():
        if f.name not in _KEPT_IN_WEIGHTS_ONLY:
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)


def _read_listing(folder: Path) -> dict[str, Any] | None:
    """The parameters checkpoint ``folder`` left out, with their fingerprint; None for a complete checkpoint."""
    path = folder / UNCHANGED_FILE
    if not path.is_file():
        return None
    try:
        listing = json.loads(path.read_text())
        if not isinstance(listing["parameters"], list) or not isinstance(listing["fingerprint"], str):
            raise TypeError("parameters must be a list and fingerprint a string")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a listing of left-out parameters written by mtransfer ({err}).") from None
    return listing
