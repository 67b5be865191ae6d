"""The ``mtransfer`` command line: ``demo``, ``train``, ``pretrain``, ``evaluate``, ``predict``, ``export``, ``card``, ``push``, ``rank-sources``, ``rank-models``, ``adapt-speech``, ``tabular``.

Every verb has ``--help``. ``train`` takes the common settings as flags and any other
:class:`~mtransfer.training.TrainingArguments` field as ``--set key=value``; it runs the same
code as the Python API, so it also runs under ``accelerate launch -m mtransfer.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from mtransfer.builtins import DATA, DEFAULT_SCORER, MODELS, TABLES  # a registry of names: imports no torch

# the task registry's names, kept here so that --help imports no torch (tests/test_cli.py checks they match)
TASK_NAMES = ["single_label_classification", "multi_label_classification", "regression", "ctc"]


def int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not >= {minimum}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def hidden_sizes(text: str) -> list[int]:
    """argparse type: comma-separated MLP widths (``"256,64"``), empty for a linear head."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not all(x.isdigit() and int(x) > 0 for x in items):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive widths, e.g. 256,64")
    return [int(x) for x in items]


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["num_epochs=3", "strategy=frozen"]`` -> typed TrainingArguments settings, through the config parser."""
    from mtransfer.config import load_recipe_config

    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value.")
    config = load_recipe_config(None, [f"training.{p.strip()}" for p in pairs], source="--set")
    names = {p.split("=", 1)[0].strip() for p in pairs}
    return {k: v for k, v in config.training.to_dict().items() if k in names}


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-column", default=None,
                   help="column of raw inputs (default: text; image / audio for those modalities)")
    p.add_argument("--label-column", default="label", help="label column (default: label)")
    p.add_argument("--label-separator", default=None, help="split multi-label strings on this")


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (``mtransfer VERB: error: ...``) and exit code 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


TRUST_HELP = ("allow the model folder to import the code it names (a torch backbone saved from your own class); "
              "off by default: opening a folder runs nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mtransfer", description="Transfer learning across images, text and speech.",
                           epilog="Shipped models and data, usable wherever a model or data path goes: "
                                  + ", ".join(MODELS) + " (models); " + ", ".join(DATA) + " (data); "
                                  + ", ".join(TABLES) + " (tables, for mtransfer tabular). "
                                  "`mtransfer modalities` lists the adapters.")
    parser.add_argument("--version", action="version", version=f"mtransfer {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for add in (_add_demo, _add_train, _add_pretrain, _add_use, _add_publish, _add_ranking, _add_adapt_speech,
                _add_tabular):
        add(sub)
    sub.add_parser("modalities", help="list the adapters (modalities) --modality takes")
    return parser


def _add_demo(sub: Any) -> None:
    """The ``demo`` verb."""
    demo = sub.add_parser("demo", help="the embedded default job: MiniLM on fortunes topics, 3 transfer strategies compared",
                          description="Fine-tune the real MiniLM-L6 encoder on Debian fortunes topics as a frozen probe, "
                                      "a two-stage fine-tune and from random init; print the comparison table.")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--model", default=None, help="another text backbone (Hub id or folder) instead of MiniLM")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every run's epochs (e.g. 0.5 for a quick look)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_tabular(sub: Any) -> None:
    """The ``tabular`` verb: deep features beside a table's columns, gradient boosting."""
    tab = sub.add_parser("tabular", help="gradient boosting on a table's columns plus backbone features of its text/media columns",
                         description="Cross-validate three models (the table's columns only, the deep features only, both), "
                                     "print the comparison, then fit 'both' on all rows and save it (no pickle).")
    tab.add_argument("--train", required=True,
                     help="a csv / json / parquet table, or a builtin table: " + ", ".join(TABLES)
                          + " (with its own target and columns unless you name them)")
    tab.add_argument("--target", default=None, help="the column to predict (a builtin table has its own)")
    tab.add_argument("--task", choices=["regression", "classification"], default=None,
                     help="default: the builtin table's, else regression")
    tab.add_argument("--text-column", action="append", default=[], help="a column of texts (repeatable)")
    tab.add_argument("--image-column", action="append", default=[], help="a column of image paths (repeatable)")
    tab.add_argument("--audio-column", action="append", default=[], help="a column of audio paths (repeatable)")
    tab.add_argument("--numeric-column", action="append", default=[], help="a numeric column (repeatable)")
    tab.add_argument("--categorical-column", action="append", default=[], help="a categorical column (repeatable)")
    tab.add_argument("--text-model", default=None, help="MODALITY:MODEL for text columns (default sentence:builtin:minilm)")
    tab.add_argument("--image-model", default=None, help="MODALITY:MODEL for image columns, e.g. "
                                                         "torch:builtin:efficientnet-lite0 or image:google/vit-base-patch16-224")
    tab.add_argument("--audio-model", default=None, help="MODALITY:MODEL for audio columns")
    tab.add_argument("--dim", type=positive_int, default=32, help="PCA columns per text/media column (default 32)")
    tab.add_argument("--booster", choices=["lightgbm", "xgboost", "hist"], default="lightgbm")
    tab.add_argument("--booster-param", dest="booster_params", action="append", default=[], metavar="KEY=VALUE",
                     help="a setting of the booster by its own name, value read as YAML (repeatable), e.g. "
                          "--booster-param num_leaves=15 --booster-param min_data_in_leaf=20; checked against the "
                          "booster's parameter names. Given any, the search below is off")
    tab.add_argument("--no-search", action="store_true",
                     help="without --booster-param: the fixed defaults instead of a search of the booster's main "
                          "settings (tree size, leaf size, learning rate) on the validation part")
    tab.add_argument("--num-threads", type=positive_int, default=None,
                     help="threads the booster uses (default: every core); on a shared machine, the cores you may use")
    tab.add_argument("--folds", type=positive_int, default=5)
    tab.add_argument("--limit", type=positive_int, default=None, help="use this many rows (sampled with --seed)")
    tab.add_argument("--test", default=None, help="a held-out table to score the final model on")
    tab.add_argument("--output-dir", default="outputs/tabular")
    tab.add_argument("--seed", type=int, default=0)
    tab.add_argument("--no-progress", action="store_true")


def cmd_tabular(a: argparse.Namespace) -> int:
    from mtransfer.experiments.tabular_comparison import comparison_table, run_comparison
    from mtransfer.tabular import read_table, tabular_settings

    target, task, columns, settings = tabular_settings(a)
    frame = read_table(a.train, a.limit, a.seed, "--train")
    test = read_table(a.test, None, a.seed, "--test") if a.test else None
    result = run_comparison(frame, target, task, columns, a.output_dir, folds=a.folds, seed=a.seed, test=test,
                            where=f"--train {a.train}", test_where=f"--test {a.test}", **settings)
    print(f"{a.folds}-fold cross-validation on {len(frame)} rows of {a.train}, target {target} "
          "(mean ± standard deviation over folds):")
    print(comparison_table(result["cross_validation"]))
    if "test" in result:
        print("test:", json.dumps(result["test"]))
    print(f"model and comparison in {a.output_dir}")
    return 0


def _add_train(sub: Any) -> None:
    """The ``train`` verb: flags or a recipe config."""
    train = sub.add_parser("train", help="fine-tune a backbone on labelled data",
                           description="Fine-tune a backbone on a labelled file or dataset with a transfer strategy.")
    train.add_argument("--config", default=None,
                       help="a recipe YAML config (recipes/configs/...); flags below are then not needed, and "
                            "section.key=value arguments override its keys")
    train.add_argument("config_overrides", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                       help="with --config: overrides, e.g. training.num_epochs=2 model.name_or_path=/models/bert")
    train.add_argument("--model", default=None, help="backbone: Hub id or local folder (required without --config)")
    train.add_argument("--modality", default="text",
                       help="adapter (modality) name (default: text); `mtransfer modalities` lists them")
    train.add_argument("--train", default=None,
                       help="training data: .csv/.tsv/.json/.jsonl/.parquet file, a data folder (imagefolder / "
                            "audiofolder) or a datasets name (required without --config)")
    train.add_argument("--validation", default=None, help="validation data (same formats)")
    train.add_argument("--test", default=None, help="test data (same formats): evaluated after training, in the output")
    _add_data_args(train)
    train.add_argument("--task", default="single_label_classification",
                       choices=TASK_NAMES,
                       help="ctc: speech recognition (an audio model; --label-column names the transcripts)")
    train.add_argument("--vocabulary", default=None,
                       help="ctc: characters (default), phones:VOICE (espeak-ng IPA, e.g. phones:hi), or model "
                            "(the --init-from model's own)")
    train.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                       help="start from a trained mtransfer model: its backbone as trained, a new head for this data "
                            "(CTC: rows of shared symbols copied)")
    train.add_argument("--output-dir", default=None, help="run folder (required without --config)")
    train.add_argument("--strategy", default="two_stage",
                       help="frozen, last_n, full, two_stage, gradual_unfreezing, chain_thaw, contrastive (pairs from the "
                            "labels, then logistic regression on the tuned features; --set contrastive_pairs=N, "
                            "--set contrastive_head=neural)")
    train.add_argument("--epochs", type=positive_int, default=3)
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate of the phases that train the backbone (default 2e-5); with frozen or "
                            "gradual_unfreezing and no --head-lr, also the head-only phase's")
    train.add_argument("--head-lr", type=float, default=None,
                       help="learning rate of every head-only phase: frozen, and the first phase of two_stage, "
                            "gradual_unfreezing and chain_thaw (default: chosen on the feature cache among a few rates "
                            "and weight decays, by the validation metric; the run prints and records the choice)")
    train.add_argument("--last-n", type=positive_int, default=None)
    train.add_argument("--head-epochs", type=positive_int, default=None, help="two_stage: epochs of the head-only stage")
    train.add_argument("--num-threads", type=positive_int, default=None,
                       help="torch threads per process (default: torch's, one per core); on a machine other jobs "
                            "share, set it to the cores you may use")
    train.add_argument("--batch-size", type=positive_int, default=16)
    train.add_argument("--max-length", type=positive_int, default=None, help="text: tokens per input")
    train.add_argument("--pooling", default=None, help="text: cls, mean or pooler")
    train.add_argument("--adapter", dest="adapter_settings", action="append", default=[], metavar="KEY=VALUE",
                       help="any adapter setting, value read as YAML, e.g. --adapter image_size=160 "
                            "--adapter max_duration=8 --adapter 'augmentation={hflip: 0.0}'")
    train.add_argument("--hidden-sizes", type=hidden_sizes, default=[],
                       help="MLP head widths, comma-separated (default: linear head)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    train.add_argument("--save-checkpoints", choices=["best", "last", "all", "none"], default=None,
                       help="checkpoints kept in --output-dir/checkpoints: best (default: the latest epoch's, to "
                            "resume, and the best epoch's weights), last (the latest only), all, none (no resume)")
    train.add_argument("--resume", action="store_true",
                       help="resume from the latest checkpoint in --output-dir (it must come from a run you trust: "
                            "Accelerate stores random-number states with pickle)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any other TrainingArguments field, e.g. --set lr_schedule=slanted_triangular")
    train.add_argument("--no-progress", action="store_true")


def _add_pretrain(sub: Any) -> None:
    """``pretrain``: self-supervised continued pretraining of a wav2vec2 encoder on unlabelled audio."""
    pre = sub.add_parser("pretrain", help="continue the self-supervised pretraining of a wav2vec2 encoder on audio",
                         description="wav2vec 2.0's contrastive + diversity objective on unlabelled audio (no "
                                     "transcripts); the result loads as an audio backbone (train --model OUT/model).")
    pre.add_argument("--model", required=True, help="a wav2vec2 model: Hub id, folder or builtin:wav2vec2-small")
    pre.add_argument("--audio", required=True,
                     help="unlabelled audio: a folder (searched recursively), a data file with --input-column, or "
                          "builtin:espeak-asr-LANG (its training audio)")
    pre.add_argument("--input-column", default="audio", help="column of audio paths in a data file (default: audio)")
    pre.add_argument("--output-dir", required=True)
    pre.add_argument("--epochs", type=positive_int, default=10)
    pre.add_argument("--lr", type=float, default=5e-4)
    pre.add_argument("--batch-size", type=positive_int, default=8)
    pre.add_argument("--max-duration", type=float, default=10.0, help="seconds per clip (longer ones are cropped)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --output-dir")
    pre.add_argument("--no-progress", action="store_true")


def cmd_pretrain(a: argparse.Namespace) -> int:
    from mtransfer.data import load_labeled
    from mtransfer.media import AUDIO_SUFFIXES
    from mtransfer.speech.pretrain import PretrainArguments, continue_pretraining

    source = Path(a.audio).expanduser()
    if a.audio.startswith("builtin:"):
        audio = load_labeled(a.audio, split="train", label_column=None).inputs
    elif source.is_dir():
        audio = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not audio:
            raise ValueError(f"--audio {a.audio}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in the folder.")
    else:
        audio = load_labeled(a.audio, input_column=a.input_column, label_column=None).inputs
    args = PretrainArguments(a.output_dir, num_epochs=a.epochs, learning_rate=a.lr, batch_size=a.batch_size,
                             max_duration=a.max_duration, seed=a.seed, progress_bar=not a.no_progress,
                             resume_from_checkpoint="latest" if a.resume else None)
    result = continue_pretraining(a.model, audio, args)
    print(json.dumps({"model_dir": result.model_dir, "history": result.history, "seconds": round(result.seconds, 1)}))
    return 0


def _add_use(sub: Any) -> None:
    """``evaluate`` and ``predict``: using a trained model."""
    evaluate = sub.add_parser("evaluate", help="metrics of a trained model on labelled data")
    evaluate.add_argument("--model-dir", required=True, help="folder written by train (…/model)")
    evaluate.add_argument("--data", required=True)
    _add_data_args(evaluate)
    evaluate.set_defaults(label_column=None)  # label, or a tabular model's own target
    evaluate.add_argument("--batch-size", type=positive_int, default=64)
    evaluate.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    _add_decoding_args(evaluate)

    predict = sub.add_parser("predict", help="predictions as JSON lines",
                             description="Predict for texts (one per line, or a column of a csv/json file), for image or "
                                         "audio files (a file, a folder searched recursively, or a column of paths), or "
                                         "for lines of standard input; print one JSON object per input.")
    predict.add_argument("--model-dir", required=True)
    predict.add_argument("--input", default="-", help="file or folder, or - for standard input (default)")
    predict.add_argument("--input-column", default=None, help="column of inputs in a data file (default: text, image or audio by the model)")
    predict.add_argument("--batch-size", type=positive_int, default=32)
    predict.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    _add_decoding_args(predict)


def _add_decoding_args(parser: Any) -> None:
    group = parser.add_argument_group("speech recognition (CTC models)")
    group.add_argument("--beam-width", type=positive_int, default=None,
                       help="beam search (pyctcdecode) with this many prefixes instead of greedy decoding")
    group.add_argument("--lm", default=None, help="a KenLM n-gram (.arpa or .bin) over words for the beam search")
    group.add_argument("--alpha", type=float, default=0.5, help="language-model weight (default 0.5)")
    group.add_argument("--beta", type=float, default=1.0, help="word-insertion bonus (default 1.0)")


def _decoder(a: argparse.Namespace, model: Any) -> Any:
    """The beam-search decoder ``--beam-width`` / ``--lm`` ask for, or None (greedy)."""
    if a.beam_width is None and a.lm is None:
        return None
    if not model.head.kind.transcribes:
        raise ValueError(f"--beam-width / --lm are for speech recognition (CTC) models; this one does {model.task}.")
    from mtransfer.speech.decoding import BeamSearchDecoder

    return BeamSearchDecoder(model.vocabulary, beam_width=a.beam_width or 32, lm=a.lm, alpha=a.alpha, beta=a.beta)


def _add_publish(sub: Any) -> None:
    """``export``, ``card`` and ``push``: publishing a model."""
    export = sub.add_parser("export", help="write a trained model as a standard transformers folder",
                            description="Map the head onto the architecture's own classifier and save an "
                                        "AutoModelFor{Sequence,Image,Audio}Classification folder that transformers.pipeline "
                                        "loads; checked numerically against mtransfer before writing.")
    export.add_argument("--model-dir", required=True, help="folder written by train (…/model)")
    export.add_argument("--output", required=True, help="the transformers folder to write (new or empty)")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder, replacing files of the same name (nothing else is deleted)")
    export.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    export.add_argument("--repo-id", default=None,
                        help="Hub repo the export goes to, for its model card (written when MODEL_DIR is a run's model folder)")

    card = sub.add_parser("card", help="write a model card (README.md) for a training run",
                          description="Generate README.md with Hub metadata, the training procedure and the evaluation "
                                      "results of a run folder written by train, next to its model.")
    card.add_argument("--run-dir", required=True, help="the --output-dir of a train run")
    card.add_argument("--folder", default=None,
                      help="where to write README.md: RUN_DIR/model (default) or a transformers export of it; the card's "
                           "metadata and usage code follow the folder")
    card.add_argument("--repo-id", default=None, help="the Hub repo the folder goes to (title and usage code)")
    card.add_argument("--name", default=None, help="title (default: the repo's name, else BASE-finetuned[-DATASET])")
    card.add_argument("--dataset", action="append", default=[], help="Hub dataset id the model was trained on (repeatable)")
    card.add_argument("--license", default=None)
    card.add_argument("--language", action="append", default=None)

    push = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub",
                          description="Create the Hub repo if needed and upload the folder. The token comes from HF_TOKEN "
                                      "or huggingface-cli login and is never printed.")
    push.add_argument("--folder", required=True, help="folder to upload (a model folder with its README.md)")
    push.add_argument("--repo-id", required=True, help="user/name on the Hub")
    push.add_argument("--private", action="store_true")
    push.add_argument("--branch", default=None, help="upload to this branch (created if needed)")
    push.add_argument("--message", default="Upload model trained with mtransfer", help="commit message")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded and stop")




def _inverse_strength(text: str) -> float | str:
    if text == "cv":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number or 'cv'")
    return value


def _add_adapt_speech(sub: Any) -> None:
    """``adapt-speech``: rank source corpora, pretrain on the best, adapt to the target."""
    ad = sub.add_parser("adapt-speech",
                        help="rank source languages for a target, train on the best, adapt (speech recognition)",
                        description="A language-ID scorer ranks the source corpora on the target's audio; a CTC model "
                                    "is trained on the top one and adapted to the target (new head, shared units copied).")
    ad.add_argument("--source", action="append", required=True, metavar="NAME=CORPUS",
                    help="a candidate source (repeat, at least 2): builtin:espeak-asr-LANG, TRAIN,VALIDATION[,TEST] "
                         "data files with audio and transcript columns, or audio:PATH (a folder of audio files or a "
                         "data file with an audio column: untranscribed, see --unlabelled)")
    ad.add_argument("--target", required=True, metavar="CORPUS", help="the target, transcribed, given like a source")
    ad.add_argument("--target-utterances", type=positive_int, default=None,
                    help="keep this many target training utterances (the small budget; default: all)")
    ad.add_argument("--scorer", default=DEFAULT_SCORER, help=f"rank-sources backbone (default: {DEFAULT_SCORER})")
    ad.add_argument("--top-k", type=positive_int, default=1, help="pool the k best-ranked sources (default: 1)")
    ad.add_argument("--unlabelled", choices=["error", "pretrain"], default="error",
                    help="an untranscribed source: stop (error), or continue a wav2vec2 encoder's pretraining on its "
                         "audio (pretrain; --model must be wav2vec2, e.g. builtin:wav2vec2-small)")
    ad.add_argument("--no-baseline", action="store_true", help="skip the random-init run on the target data")
    ad.add_argument("--model", default="builtin:w2v-bert-mini", help="the encoder to train on the source")
    ad.add_argument("--source-epochs", type=positive_int, default=15)
    ad.add_argument("--target-epochs", type=positive_int, default=30)
    ad.add_argument("--scratch-epochs", type=positive_int, default=120)
    ad.add_argument("--pretrain-epochs", type=positive_int, default=10)
    ad.add_argument("--source-patience", type=positive_int, default=4)
    ad.add_argument("--patience", type=positive_int, default=6)
    ad.add_argument("--scratch-patience", type=positive_int, default=20)
    ad.add_argument("--min-epochs", type=non_negative_int, default=12,
                    help="no run stops early before this epoch (the transfer matrix's floor; default 12)")
    ad.add_argument("--ctc-plateau", type=float, default=0.1,
                    help="share of the reference characters below which an epoch is on CTC's all-blank plateau: never "
                         "a run's best, and patience starts after it (default 0.1; 0: off)")
    ad.add_argument("--batch-size", type=positive_int, default=8)
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--num-threads", type=positive_int, default=None,
                    help="torch threads for every stage (default: torch's, one per core); on a machine other jobs "
                         "share, set it to the cores you may use")
    ad.add_argument("--output-dir", required=True, help="rerun with the same folder to resume: finished stages are kept")
    ad.add_argument("--no-progress", action="store_true")


def _corpus(value: str, flag: str) -> Any:
    if value.startswith("builtin:"):
        return value
    if value.startswith("audio:"):
        path = Path(value[len("audio:"):]).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{flag} {value!r}: no such file or folder {path}.")
        return {"audio": str(path)}
    files = [f.strip() for f in value.split(",")]
    if len(files) not in (2, 3) or not all(files):
        raise ValueError(f"{flag} {value!r}: expected builtin:espeak-asr-LANG, TRAIN,VALIDATION[,TEST] files or "
                         "audio:PATH.")
    for f in files:
        if not Path(f).expanduser().exists():
            raise FileNotFoundError(f"{flag} {value!r}: no such file {f}.")
    return dict(zip(("train", "validation", "test"), files))


def cmd_adapt_speech(a: argparse.Namespace) -> int:
    from mtransfer.experiments.source_choice import adapt_from_best_source

    named = [_named(s, "--source") for s in a.source]
    names = [n for n, _ in named]
    _unique_names(names, "--source", "NAME=CORPUS")
    if len(named) < 2:
        raise ValueError(f"--source: give at least two candidate sources (NAME=CORPUS); got {names}.")
    report = adapt_from_best_source(
        {n: _corpus(c, "--source") for n, c in named}, _corpus(a.target, "--target"), a.output_dir, scorer=a.scorer,
        top_k=a.top_k, model=a.model, target_utterances=a.target_utterances, unlabelled=a.unlabelled,
        baseline=not a.no_baseline, source_epochs=a.source_epochs, target_epochs=a.target_epochs,
        scratch_epochs=a.scratch_epochs, pretrain_epochs=a.pretrain_epochs, source_patience=a.source_patience,
        patience=a.patience, scratch_patience=a.scratch_patience, min_epochs=a.min_epochs,
        ctc_plateau=a.ctc_plateau or None, batch_size=a.batch_size, seed=a.seed,
        progress=not a.no_progress, num_threads=a.num_threads, log=lambda line: print(line, file=sys.stderr))
    target = {k: report["target_results"][k] for k in ("test_cer", "test_wer", "scored_on")}
    baseline = report["baseline_results"]
    print(json.dumps({"source": report["source"], "ranking": report["ranking"], "target": target,
                      "random_init": {k: baseline[k] for k in ("test_cer", "test_wer")} if baseline else None,
                      "model_dir": report["model_dir"]}, ensure_ascii=False))
    return 0


def _add_ranking(sub: Any) -> None:
    """``rank-sources`` and ``rank-models``: choosing what to transfer from."""
    rank_s = sub.add_parser("rank-sources", help="rank candidate source datasets for target data (language-ID scorer)",
                            description="Train a classifier that tells the candidate sources apart, run it on each target "
                                        "and rank the sources by their average posterior (with a bootstrap interval).")
    rank_s.add_argument("--source", action="append", required=True, metavar="NAME=PATH",
                        help="a candidate source: a folder of audio/image files, or a data file (repeat, at least 2)")
    rank_s.add_argument("--target", action="append", required=True, metavar="[NAME=]PATH", help="target data (repeatable)")
    rank_s.add_argument("--backbone", default=DEFAULT_SCORER,
                        help="no pretraining: 'mfcc' (cepstral statistics per utterance), 'mfcc-frames' (a network on "
                             "normalised cepstral frames, posteriors per frame), 'fbank' (log-mel statistics); or a model "
                             f"id / folder (default: {DEFAULT_SCORER})")
    rank_s.add_argument("--C", default="cv", type=_inverse_strength,
                        help="inverse L2 strength of the source classifier, or 'cv' to choose it by cross-validation "
                             "on the sources (default: cv)")
    rank_s.add_argument("--modality", default="audio", help="adapter for --backbone (default: audio)")
    rank_s.add_argument("--input-column", default="audio", help="column of inputs in data files (default: audio)")
    rank_s.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for the interval (default 1000)")
    rank_s.add_argument("--seed", type=int, default=0)
    rank_s.add_argument("--plot", default=None, help="write the target x source heatmap here (PNG)")
    rank_s.add_argument("--json", action="store_true", help="print one JSON object per target instead of the table")

    rank_m = sub.add_parser("rank-models", help="rank candidate backbones for a labelled target by transferability estimators",
                            description="Score each candidate backbone on labelled target data from its (cached) features "
                                        "with LogME, H-score and kNN accuracy; no fine-tuning. With --task ctc the "
                                        "candidates are trained CTC models (NAME=RUN/model) and the target a transcribed "
                                        "speech corpus: a head probe on each frozen encoder (--data trains it, "
                                        "--validation scores it), each model's zero-shot CER, and its own quality.")
    rank_m.add_argument("--model", action="append", required=True, metavar="[NAME=][MODALITY:]PATH[,KEY=VALUE...]",
                        help="a candidate backbone (repeat), with adapter settings of its own after commas, e.g. "
                             "mean=text:builtin:minilm,pooling=mean cls=text:builtin:minilm,pooling=cls,max_length=64")
    rank_m.add_argument("--pooling", default=None,
                        help="pooling for candidates that set none, where their adapter pools (e.g. mean, cls)")
    rank_m.add_argument("--max-length", type=int_at_least(2), default=None,
                        help="truncation length in tokens for candidates that set none")
    rank_m.add_argument("--modality", default="text", help="default adapter of candidates (default: text)")
    rank_m.add_argument("--data", required=True, help="labelled target data (ctc: the target's training utterances)")
    rank_m.add_argument("--validation", default=None,
                        help="ctc: the target's validation utterances, on which every estimate is scored (required)")
    _add_data_args(rank_m)
    rank_m.add_argument("--task", default="single_label_classification",
                        choices=["single_label_classification", "regression", "ctc"])
    rank_m.add_argument("--estimators", default=None,
                        help="comma-separated (default: logme,hscore,knn; ctc: head,zero-shot,quality)")
    rank_m.add_argument("--json", action="store_true")


def _version() -> str:
    from mtransfer.record import mtransfer_version

    return mtransfer_version()


def cmd_demo(a: argparse.Namespace) -> int:
    from mtransfer.experiments.demo import run_demo

    run_demo(a.output_dir, model=a.model, seed=a.seed, epochs_scale=a.epochs_scale, progress_bar=not a.no_progress)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """Flags or a recipe file -> one config parser -> :func:`mtransfer.config.run_recipe` (as ``recipes/train.py``)."""
    from mtransfer.config import load_recipe_config, run_recipe

    if a.config is not None:
        config = load_recipe_config(a.config, [*a.config_overrides, *_flag_overrides(a)])
    else:
        if a.config_overrides:
            raise ValueError(f"{a.config_overrides[0]!r}: section.key=value overrides need --config (flags use --set key=value).")
        if a.init_from is not None:  # the backbone (and its modality) come from the trained model
            from mtransfer.model import read_model_config

            a.modality = read_model_config(Path(a.init_from).expanduser())["modality"]
            a.model = a.model or a.init_from
        missing = [f"--{n.replace('_', '-')}" for n in ("model", "train", "output_dir") if getattr(a, n) is None]
        if missing:
            raise ValueError(f"train needs {', '.join(missing)} (or --config with a recipe file).")
        config = load_recipe_config(None, _flag_overrides(a), base=_flag_settings(a), source="command line")
    out = run_recipe(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out))
    return 0


def _flag_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The train flags as config sections (typed by argparse)."""
    from mtransfer.adapters.base import get_adapter_class

    adapter: dict[str, Any] = {"pooling": a.pooling} if a.pooling is not None else {}
    if a.max_length is not None:
        key = get_adapter_class(a.modality).max_length_setting
        if key is None:
            raise ValueError(f"--max-length: the {a.modality} adapter has no length setting.")
        adapter[key] = a.max_length
    return {
        "model": {"modality": a.modality, "name_or_path": a.model, "adapter": adapter,
                  "head": {"hidden_sizes": a.hidden_sizes}, "seed": a.seed, "init_from": a.init_from,
                  "trust_remote_code": a.trust_remote_code},
        "data": {"train": a.train, "validation": a.validation, "test": a.test,
                 "input_column": a.input_column or get_adapter_class(a.modality).default_input_column,
                 "label_column": a.label_column, "task": a.task, "label_separator": a.label_separator,
                 "vocabulary": a.vocabulary},
        "training": {"output_dir": a.output_dir, "strategy": a.strategy, "num_epochs": a.epochs, "learning_rate": a.lr,
                     "head_learning_rate": a.head_lr, "last_n": a.last_n, "batch_size": a.batch_size, "seed": a.seed,
                     **({"head_epochs": a.head_epochs} if a.head_epochs is not None else {}),
                     **({"num_threads": a.num_threads} if a.num_threads is not None else {}),
                     **({"save_checkpoints": a.save_checkpoints} if a.save_checkpoints is not None else {}),
                     "progress_bar": not a.no_progress, "resume_from_checkpoint": "latest" if a.resume else None},
    }


def _flag_overrides(a: argparse.Namespace) -> list[str]:
    """``--adapter k=v`` and ``--set k=v`` as ``model.adapter.k=v`` / ``training.k=v`` overrides."""
    out = []
    for flag, section, pairs in (("--adapter", "model.adapter", a.adapter_settings), ("--set", "training", a.overrides)):
        for pair in pairs:
            if "=" not in pair or not pair.split("=", 1)[0].strip():
                raise ValueError(f"{flag} {pair!r}: expected key=value.")
            out.append(f"{section}.{pair.strip()}")
    if a.config is not None and a.resume:
        out.append("training.resume_from_checkpoint=latest")
    if a.config is not None and a.save_checkpoints is not None:
        out.append(f"training.save_checkpoints={a.save_checkpoints}")
    if a.config is not None and a.trust_remote_code:
        out.append("model.trust_remote_code=true")
    return out


def _is_tabular(folder: str) -> bool:
    """A folder ``TabularModel.save_pretrained`` wrote (``tabular.json``, no ``config.json``)."""
    path = Path(folder).expanduser()
    return (path / "tabular.json").is_file() and not (path / "config.json").is_file()


def cmd_evaluate(a: argparse.Namespace) -> int:
    from mtransfer.data import load_labeled
    from mtransfer.model import TransferModel
    from mtransfer.training import Trainer, TrainingArguments

    if _is_tabular(a.model_dir):
        return _evaluate_tabular(a)
    model = TransferModel.from_pretrained(a.model_dir, trust_remote_code=a.trust_remote_code)
    column = a.input_column or model.adapter.default_input_column
    task = model.head.kind
    label_names = model.label_names if task.has_class_names and not task.transcribes else None
    extra = {"vocabulary": model.vocabulary} if task.transcribes else {}  # transcripts in the model's own units
    data = load_labeled(a.data, input_column=column, label_column=a.label_column or "label", task=model.task,
                        label_names=label_names, label_separator=a.label_separator, **extra)
    decoder = _decoder(a, model)
    args = TrainingArguments(output_dir=a.model_dir, eval_batch_size=a.batch_size, report_to=[], progress_bar=False)
    metrics = Trainer(model, args, eval_dataset=data).evaluate(decoder=decoder)
    if task.transcribes:
        metrics["unknown_units"] = data.unknown_units
    print(json.dumps({**metrics, **(decoder.describe() if decoder is not None else {})}))
    return 0


def _load_tabular(a: argparse.Namespace) -> Any:
    from mtransfer.tabular import TabularModel

    if a.beam_width is not None or a.lm is not None:
        raise ValueError("--beam-width / --lm are for speech recognition (CTC) models; this is a tabular model.")
    return TabularModel.from_pretrained(a.model_dir, trust_remote_code=a.trust_remote_code)


def _evaluate_tabular(a: argparse.Namespace) -> int:
    from mtransfer.tabular import read_table, score_predictions

    model = _load_tabular(a)
    target = a.label_column or model.target
    if target is None:
        raise ValueError(f"--model-dir {a.model_dir}: the tabular model does not record its target column; name it "
                         "with --label-column.")
    frame = read_table(a.data, what="--data")
    if target not in frame.columns:
        raise ValueError(f"--data {a.data}: no target column {target!r}; the columns are "
                         f"{', '.join(map(str, frame.columns[:20]))}.")
    pred = model.predict(frame, where=f"--data {a.data}")
    print(json.dumps({**score_predictions(model.task, frame[target].to_numpy(), pred), "eval_samples": len(frame)}))
    return 0


def _predict_tabular(a: argparse.Namespace) -> int:
    from mtransfer.tabular import read_table

    model = _load_tabular(a)
    if a.input == "-":
        raise ValueError("--input: a tabular model reads a table file (csv, tsv, json, jsonl or parquet), not standard input.")
    frame = read_table(a.input, what="--input")
    where = f"--input {a.input}"
    preds = model.predict(frame, where=where)
    scores = model.predict_proba(frame, where=where) if model.task == "classification" else None
    for i, p in enumerate(preds):
        row: dict[str, Any] = {"row": i, "prediction": p.item() if hasattr(p, "item") else p}
        if scores is not None:
            row["scores"] = {str(c): round(float(x), 6) for c, x in zip(model.classes, scores[i])}
        print(json.dumps(row, ensure_ascii=False, default=str))
    return 0


def _predict_inputs(source: str, column: str, adapter: Any) -> list[Any]:
    """What ``predict --input`` names: stdin lines, a table column, media files (a file or a folder) or text lines."""
    from mtransfer.data import load_labeled

    modality, suffixes = adapter.modality, (adapter.media_suffixes or None)
    if source == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    path = Path(source).expanduser()
    if path.is_dir():
        if suffixes is None:
            raise ValueError(f"--input {source}: a folder is for image or audio models; this model reads {modality} inputs.")
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"--input {source}: no files ending in {', '.join(suffixes)} in the folder.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"--input {source}: no such file or folder.")
    if path.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        return load_labeled(str(path), input_column=column, label_column=None).inputs
    if suffixes is not None and path.suffix.lower() in suffixes:
        return [str(path)]
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.rstrip("\n") for line in fh if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"--input {source}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8.") from None


def cmd_predict(a: argparse.Namespace) -> int:
    from mtransfer.model import TransferModel

    if _is_tabular(a.model_dir):
        return _predict_tabular(a)
    model = TransferModel.from_pretrained(a.model_dir, trust_remote_code=a.trust_remote_code)
    decoder = _decoder(a, model)  # before reading the inputs: a bad --lm stops here
    inputs = _predict_inputs(a.input, a.input_column or model.adapter.default_input_column, model.adapter)
    if model.head.kind.transcribes:  # speech recognition: one transcript per input
        for x, text in zip(inputs, model.transcribe(inputs, batch_size=a.batch_size, decoder=decoder)):
            print(json.dumps({"input": x, "transcript": text}, ensure_ascii=False))
        return 0
    outputs = model.predict_outputs(inputs, batch_size=a.batch_size)  # one pass: predictions and scores
    preds = model.decode(outputs)
    scores = model.head.scores(outputs) if model.head.kind.has_class_names else None
    for i, (x, p) in enumerate(zip(inputs, preds)):
        row: dict[str, Any] = {"input": x, "prediction": p}
        if scores is not None:
            row["scores"] = {name: round(float(s), 6) for name, s in zip(model.label_names, scores[i])}
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _unique_names(names: Sequence[str], flag: str, form: str) -> None:
    """Refuse a name given twice: a second entry of one name would silently replace the first."""
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"{flag}: the name {dupes[0]!r} is given twice; name each one once ({form}).")


def _named(spec: str, what: str) -> tuple[str, str]:
    if "=" in spec:
        name, path = spec.split("=", 1)
        if not name or not path:
            raise ValueError(f"{what} {spec!r}: expected NAME=PATH.")
        return name, path
    return Path(spec).stem or spec, spec


def cmd_export(a: argparse.Namespace) -> int:
    from mtransfer.model import TransferModel
    from mtransfer.export import check_apart, export_transformers

    check_apart(Path(a.output), Path(a.model_dir))  # before anything is read or written
    model = TransferModel.from_pretrained(a.model_dir, trust_remote_code=a.trust_remote_code)
    folder = export_transformers(model, a.output, overwrite=a.overwrite)
    print(folder)
    run_dir = Path(a.model_dir).resolve().parent
    if (run_dir / "metrics.json").is_file():  # a run's model folder: its card, written for the export
        from mtransfer.card import write_model_card

        print(write_model_card(run_dir, folder, repo_id=a.repo_id))
    return 0


def cmd_card(a: argparse.Namespace) -> int:
    from mtransfer.card import write_model_card

    path = write_model_card(a.run_dir, a.folder, repo_id=a.repo_id, model_name=a.name, datasets=a.dataset,
                            license=a.license, language=a.language)
    print(path)
    return 0


def cmd_push(a: argparse.Namespace) -> int:
    from mtransfer.hub import HubError, push_to_hub

    try:
        result = push_to_hub(a.folder, a.repo_id, private=a.private, branch=a.branch, commit_message=a.message,
                             dry_run=a.dry_run)
    except HubError as err:
        print(f"mtransfer push: error: {err}", file=sys.stderr)
        return 1
    if a.dry_run:
        total = sum(size for _, size in result)
        print(f"would upload {len(result)} files ({total / 2**20:.1f} MiB) to {a.repo_id}"
              + (f" (branch {a.branch})" if a.branch else "") + (" as a private repo" if a.private else "") + ":")
        for path, size in result:
            print(f"  {path}  {size} bytes")
    else:
        print(result)
    return 0


def cmd_rank_sources(a: argparse.Namespace) -> int:
    from mtransfer.ranking import rank_sources

    named = [_named(s, "--source") for s in a.source]
    _unique_names([n for n, _ in named], "--source", "NAME=PATH")
    sources = dict(named)
    if len(sources) < 2:
        raise ValueError(f"--source: give at least two candidate sources (NAME=PATH); got {list(sources)}.")
    named_targets = [_named(t, "--target") for t in a.target]
    _unique_names([n for n, _ in named_targets], "--target", "NAME=PATH")
    targets = dict(named_targets)
    for name, path in {**sources, **targets}.items():
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{name}={path}: no such file or folder.")
    result = rank_sources(sources, targets, backbone=a.backbone, modality=a.modality, input_column=a.input_column,
                          bootstrap=a.bootstrap, seed=a.seed, C=a.C)
    if a.plot:
        result.plot(a.plot)
    if a.json:
        for r in result.rankings:
            print(json.dumps(r.to_dict(), ensure_ascii=False))
    else:
        print(result.table())
        print(f"(source classifier accuracy on held-out source data: {result.lid_accuracy:.3f}; features: {result.featurizer})")
    return 0


def cmd_rank_models(a: argparse.Namespace) -> int:
    if a.task == "ctc":
        return _rank_ctc_models(a)
    from mtransfer.data import load_labeled
    from mtransfer.ranking.backbones import parse_candidate, rank_models

    a.estimators = "logme,hscore,knn" if a.estimators is None else a.estimators
    defaults = {"pooling": a.pooling, "max_length": a.max_length}
    candidates = [parse_candidate(m, a.modality, defaults) for m in a.model]
    _unique_names([c.name for c in candidates], "--model", "NAME=PATH")
    estimators = [e.strip() for e in a.estimators.split(",") if e.strip()]
    if not estimators:
        raise ValueError(f"--estimators {a.estimators!r}: name at least one of logme, hscore, knn.")
    from mtransfer.adapters.base import get_adapter_class

    column = a.input_column or get_adapter_class(candidates[0].modality).default_input_column
    data = load_labeled(a.data, input_column=column, label_column=a.label_column, task=a.task)
    scores = rank_models(candidates, data, estimators=estimators)
    if a.json:
        print(json.dumps({"data": a.data, "scores": scores}))
        return 0
    first = estimators[0]
    order = sorted(scores, key=lambda n: -scores[n].get(first, float("-inf")))
    width = max(10, *(len(n) for n in order))
    cols = [e for e in estimators if any(e in s for s in scores.values())]
    print("candidate".ljust(width) + "".join(e.rjust(11) for e in cols))
    for n in order:
        print(n.ljust(width) + "".join(f"{scores[n][e]:11.4f}" if e in scores[n] else "          -" for e in cols))
    return 0


def _rank_ctc_models(a: argparse.Namespace) -> int:
    """``rank-models --task ctc``: trained CTC source models on a transcribed target corpus (model-based estimates)."""
    from mtransfer.data import load_labeled
    from mtransfer.ranking.source_models import METHODS, rank_source_models

    named = [_named(m, "--model") for m in a.model]
    _unique_names([n for n, _ in named], "--model", "NAME=RUN/model")
    methods = [m.strip() for m in (",".join(METHODS) if a.estimators is None else a.estimators).split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--estimators {a.estimators!r}: name at least one of {', '.join(METHODS)}.")
    if a.validation is None:
        raise ValueError("rank-models --task ctc needs --validation (the target's validation utterances score every "
                         "estimate; --data trains the head probe).")
    column, label = a.input_column or "audio", a.label_column
    train = load_labeled(a.data, input_column=column, label_column=label, task="ctc")
    valid = load_labeled(a.validation, input_column=column, label_column=label, task="ctc", vocabulary=train.vocabulary)
    ranked = rank_source_models(dict(named), train, valid, methods=methods)
    if a.json:
        print(json.dumps({"data": a.data, "validation": a.validation, "scores": ranked}))
        return 0
    first = methods[0]
    order = sorted(ranked[first], key=lambda n: -ranked[first][n]["score"])
    width = max(10, *(len(n) for n in order))
    print("model".ljust(width) + "".join(f"{m + ' CER':>16}" for m in methods) + "   seconds")
    for n in order:
        print(n.ljust(width) + "".join(f"{ranked[m][n]['cer']:16.4f}" for m in methods)
              + f"{sum(ranked[m][n]['seconds'] for m in methods):10.1f}")
    return 0


def cmd_modalities(a: argparse.Namespace) -> int:
    from mtransfer.modalities import modality_lines  # a table: no adapter (and no torch) imported

    print("\n".join(modality_lines()))
    return 0


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "rank-sources": cmd_rank_sources, "rank-models": cmd_rank_models, "adapt-speech": cmd_adapt_speech,
            "card": cmd_card, "push": cmd_push, "export": cmd_export, "modalities": cmd_modalities, "pretrain": cmd_pretrain, "tabular": cmd_tabular}


def expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can fix (bad input, missing files, a locked folder, a full disk): one line, exit 2."""
    from safetensors import SafetensorError

    from mtransfer.locks import OutputLockedError

    return (ValueError, OSError, OutputLockedError, SafetensorError)


def describe_error(err: BaseException) -> str:
    """One line for an expected failure."""
    import errno

    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err):
        filename = getattr(err, "filename", None)  # safetensors' writer raises its own error type, without a name
        where = f" while writing {filename}" if filename else ""
        return f"disk full{where}; nothing half-written was kept: free some space or choose another folder."
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[a.command](a)
    except KeyboardInterrupt:
        print(f"mtransfer {a.command}: interrupted", file=sys.stderr)
        return 130
    except expected_errors() as err:
        if a.debug:
            raise
        print(f"mtransfer {a.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
