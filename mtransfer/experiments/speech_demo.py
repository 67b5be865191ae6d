"""Cross-lingual transfer for speech recognition on offline speech (espeak-ng), as one function.

Three runs, the same small architecture (the w2v-BERT preset by default) and the same target data:

1. **source from scratch**: a CTC model trained from random initialisation on the source
   language's training speakers (e.g. Hindi, 300 utterances);
2. **target, initialised from the source model**: its encoder as trained, a new CTC head for the
   target's characters (rows of the characters both scripts share copied), fine-tuned on
   ``fraction`` of the target's training utterances (e.g. 10% of Marathi: 30 utterances);
3. **target from random initialisation** on that same small set, with its own learning rate
   and a longer budget, trained until its validation CER stops improving (the best epoch is
   kept), so the comparison measures transfer and not the all-blank plateau.

Every run is evaluated on speakers it never heard (the corpus's test speaker). The target
vocabulary comes from the small target set's transcripts for both target runs.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mtransfer.data import load_labeled
from mtransfer.experiments.transfer_matrix import train_ctc_run
from mtransfer.model import TransferModel


@dataclass
class SpeechRun:
    """One run's settings and results."""

    name: str
    language: str
    train_utterances: int
    init: str
    num_epochs: int
    learning_rate: float
    results: dict[str, Any] = field(default_factory=dict)


def _train(name: str, model: Any, train: Any, valid: Any, test: Any, out: Path, *, epochs: int, lr: float,
           patience: int, batch_size: int, progress_bar: bool, seed: int) -> dict[str, Any]:

    results = train_ctc_run(model, train, valid, test, out / name, epochs=epochs, lr=lr, patience=patience,
                            batch_size=batch_size, seed=seed, progress=progress_bar, plot=True)
    examples = list(zip(test.references[:3], model.transcribe(test.inputs[:3])))
    return {**results, "examples": [{"reference": r, "hypothesis": h} for r, h in examples]}


def run_speech_demo(output_dir: str | Path = "outputs/speech_demo", *, source: str = "hi", target: str = "mr",
                    fraction: float = 0.1, model: str = "builtin:w2v-bert-small", source_epochs: int = 40,
                    target_epochs: int = 60, scratch_epochs: int = 200, source_lr: float = 2e-3,
                    target_lr: float = 1e-3, scratch_lr: float = 2e-3, patience: int = 10, scratch_patience: int = 20,
                    batch_size: int = 8, seed: int = 0, progress_bar: bool = True,
                    only: Sequence[str] = ("source", "transfer", "scratch")) -> list[SpeechRun]:
    """Run the three trainings and write ``results.json`` and a table (``results.md``) into ``output_dir``.

    ``scratch_patience`` epochs without a better validation CER end the random-init target run
    (20 epochs, 80 steps of 8 utterances: the random-init run left the all-blank plateau, where
    the CER stays at 1.0, after about 15 epochs, and its best epoch was the 33rd of 53); ``only`` reruns some of the runs, keeping
    the others' results from an earlier ``results.json`` in ``output_dir``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    load = lambda lang, split, **kw: load_labeled(f"builtin:espeak-asr-{lang}", split=split, task="ctc", **kw)  # noqa: E731
    src_train = load(source, "train")
    src_valid, src_test = (load(source, s, vocabulary=src_train.vocabulary) for s in ("validation", "test"))
    full_target = load(target, "train")
    keep = sorted(random.Random(seed).sample(range(len(full_target)), max(1, round(fraction * len(full_target)))))
    # the small set's own vocabulary: the characters of its transcripts only
    small = load_labeled([{"audio": full_target.inputs[i], "transcript": full_target.references[i]} for i in keep],
                         input_column="audio", label_column="transcript", task="ctc")
    tgt_valid, tgt_test = (load(target, s, vocabulary=small.vocabulary) for s in ("validation", "test"))
    common = dict(batch_size=batch_size, progress_bar=progress_bar, seed=seed, patience=patience)
    earlier = {r["name"]: r for r in json.loads((out / "results.json").read_text())} if (out / "results.json").is_file() else {}
    runs: list[SpeechRun] = []

    run = SpeechRun(f"{source} from scratch", source, len(src_train), "random", source_epochs, source_lr)
    if "source" in only:
        scratch = TransferModel.from_backbone("audio", model, labels=src_train.vocabulary, task="ctc", seed=seed)
        run.results = _train("source_scratch", scratch, src_train, src_valid, src_test, out, epochs=source_epochs,
                             lr=source_lr, **common)
    runs.append(_kept(run, earlier))

    run = SpeechRun(f"{target} {fraction:.0%}, init from {source}", target, len(small), f"{source} model",
                    target_epochs, target_lr)
    if "transfer" in only:
        transfer = TransferModel.from_pretrained(out / "source_scratch" / "model").with_new_head(small.vocabulary,
                                                                                                   seed=seed)
        run.results = _train("target_transfer", transfer, small, tgt_valid, tgt_test, out, epochs=target_epochs,
                             lr=target_lr, **common)
        run.results["copied_rows"] = transfer.copied_rows
    runs.append(_kept(run, earlier))

    run = SpeechRun(f"{target} {fraction:.0%}, random init", target, len(small), "random", scratch_epochs, scratch_lr)
    if "scratch" in only:
        alone = TransferModel.from_backbone("audio", model, labels=small.vocabulary, task="ctc", seed=seed)
        run.results = _train("target_scratch", alone, small, tgt_valid, tgt_test, out, epochs=scratch_epochs,
                             lr=scratch_lr, **{**common, "patience": scratch_patience})
    runs.append(_kept(run, earlier))

    (out / "results.json").write_text(json.dumps([asdict(r) for r in runs], indent=2, ensure_ascii=False))
    (out / "results.md").write_text(results_table(runs) + "\n")
    return runs


def _kept(run: SpeechRun, earlier: dict[str, Any]) -> SpeechRun:
    """A run not redone this time keeps its earlier results."""
    if not run.results:
        if run.name not in earlier:
            raise ValueError(f"no earlier results for {run.name!r}: run it (only=...) first.")
        run.results = earlier[run.name]["results"]
    return run


def results_table(runs: list[SpeechRun]) -> str:
    lines = ["| run | train utterances | epochs run (best) | test CER | test WER | train time |", "|---|---|---|---|---|---|"]
    for r in runs:
        x = r.results
        lines.append(f"| {r.name} | {r.train_utterances} | {x['epochs_run']} ({x['best_epoch']}) | {x['test_cer']:.3f} | "
                     f"{x['test_wer']:.3f} | {x['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)
