"""The ``mtransfer`` command line: ``demo``, ``train``, ``evaluate``, ``predict``, ``rank-sources``, ``rank-models``.

Every verb has ``--help``. ``train`` takes the common settings as flags and any other
:class:`~mtransfer.training.TrainingArguments` field as ``--set key=value``; it runs the same
code as the Python API, so it also runs under ``accelerate launch -m mtransfer.cli train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml


def _parse_value(field: dataclasses.Field, raw: str) -> Any:
    """Turn ``raw`` into the type a TrainingArguments field is annotated with."""
    hint = str(field.type)
    if raw.lower() in ("none", "null") and "None" in hint:
        return None
    if hint.startswith("bool"):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {field.name}={raw}: expected true or false.")
    if hint.startswith("int"):
        return int(raw)
    if hint.startswith("float"):
        return float(raw)
    if hint.startswith(("list", "tuple")):
        items = [x.strip() for x in raw.split(",") if x.strip()]
        return [float(x) for x in items] if "float" in hint else items
    return raw


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["num_epochs=3", "strategy=frozen"]`` -> typed TrainingArguments settings; unknown keys rejected."""
    from mtransfer.training import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value.")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in fields:
            close = [k for k in fields if k.startswith(key[:4])]
            raise ValueError(f"--set {key}: unknown training setting" + (f"; did you mean {', '.join(close)}?" if close else "."))
        try:
            out[key] = _parse_value(fields[key], raw.strip())
        except ValueError as err:
            raise ValueError(f"--set {key}={raw}: {err}") from None
    return out


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-column", default="text", help="column of raw inputs (default: text)")
    p.add_argument("--label-column", default="label", help="label column (default: label)")
    p.add_argument("--label-separator", default=None, help="split multi-label strings on this")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtransfer", description="Transfer learning across images, text and speech.")
    parser.add_argument("--version", action="version", version=f"mtransfer {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the embedded default job: MiniLM on fortunes topics, 3 transfer strategies compared",
                          description="Fine-tune the real MiniLM-L6 encoder on Debian fortunes topics as a frozen probe, "
                                      "a two-stage fine-tune and from random init; print the comparison table.")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--model", default=None, help="another text backbone (Hub id or folder) instead of MiniLM")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every run's epochs (e.g. 0.5 for a quick look)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    train = sub.add_parser("train", help="fine-tune a backbone on labelled data",
                           description="Fine-tune a backbone on a labelled file or dataset with a transfer strategy.")
    train.add_argument("--config", default=None,
                       help="a recipe YAML config (recipes/configs/...); flags below are then not needed, and "
                            "section.key=value arguments override its keys")
    train.add_argument("config_overrides", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                       help="with --config: overrides, e.g. training.num_epochs=2 model.name_or_path=/models/bert")
    train.add_argument("--model", default=None, help="backbone: Hub id or local folder (required without --config)")
    train.add_argument("--modality", default="text",
                       help="adapter: text, sentence, static_vectors, image (transformers / timm), torch (plain "
                            "PyTorch backbone, e.g. efficientnet_lite0) or audio (wav2vec2 family) (default: text)")
    train.add_argument("--train", default=None,
                       help="training data: .csv/.tsv/.json/.jsonl/.parquet file, a data folder (imagefolder / "
                            "audiofolder) or a datasets name (required without --config)")
    train.add_argument("--validation", default=None, help="validation data (same formats)")
    _add_data_args(train)
    train.add_argument("--task", default="single_label_classification",
                       choices=["single_label_classification", "multi_label_classification", "regression"])
    train.add_argument("--output-dir", default=None, help="run folder (required without --config)")
    train.add_argument("--strategy", default="two_stage", help="frozen, last_n, full, two_stage, gradual_unfreezing, chain_thaw")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--lr", type=float, default=2e-5, help="peak learning rate of fine-tuning")
    train.add_argument("--head-lr", type=float, default=None, help="learning rate of head-only phases")
    train.add_argument("--last-n", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--max-length", type=int, default=None, help="text: tokens per input")
    train.add_argument("--pooling", default=None, help="text: cls, mean or pooler")
    train.add_argument("--adapter", dest="adapter_settings", action="append", default=[], metavar="KEY=VALUE",
                       help="any adapter setting, value read as YAML, e.g. --adapter image_size=160 "
                            "--adapter max_duration=8 --adapter 'augmentation={hflip: 0.0}'")
    train.add_argument("--hidden-sizes", default="", help="MLP head widths, comma-separated (default: linear head)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in --output-dir")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any other TrainingArguments field, e.g. --set lr_schedule=slanted_triangular")
    train.add_argument("--no-progress", action="store_true")

    evaluate = sub.add_parser("evaluate", help="metrics of a trained model on labelled data")
    evaluate.add_argument("--model-dir", required=True, help="folder written by train (…/model)")
    evaluate.add_argument("--data", required=True)
    _add_data_args(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=64)

    predict = sub.add_parser("predict", help="predictions as JSON lines",
                             description="Predict for texts (one per line, or a column of a csv/json file), for image or "
                                         "audio files (a file, a folder searched recursively, or a column of paths), or "
                                         "for lines of standard input; print one JSON object per input.")
    predict.add_argument("--model-dir", required=True)
    predict.add_argument("--input", default="-", help="file or folder, or - for standard input (default)")
    predict.add_argument("--input-column", default="text")
    predict.add_argument("--batch-size", type=int, default=32)

    export = sub.add_parser("export", help="write a trained model as a standard transformers folder",
                            description="Map the head onto the architecture's own classifier and save an "
                                        "AutoModelFor{Sequence,Image,Audio}Classification folder that transformers.pipeline "
                                        "loads; checked numerically against mtransfer before writing.")
    export.add_argument("--model-dir", required=True, help="folder written by train (…/model)")
    export.add_argument("--output", required=True, help="the transformers folder to write")

    card = sub.add_parser("card", help="write a model card (README.md) for a training run",
                          description="Generate README.md with Hub metadata, the training procedure and the evaluation "
                                      "results of a run folder written by train, next to its model.")
    card.add_argument("--run-dir", required=True, help="the --output-dir of a train run")
    card.add_argument("--folder", default=None, help="where to write README.md (default: RUN_DIR/model)")
    card.add_argument("--name", default=None, help="model name in the title")
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

    rank_s = sub.add_parser("rank-sources", help="rank candidate source datasets for target data (language-ID scorer)",
                            description="Train a classifier that tells the candidate sources apart, run it on each target "
                                        "and rank the sources by their average posterior (with a bootstrap interval).")
    rank_s.add_argument("--source", action="append", required=True, metavar="NAME=PATH",
                        help="a candidate source: a folder of audio/image files, or a data file (repeat, at least 2)")
    rank_s.add_argument("--target", action="append", required=True, metavar="[NAME=]PATH", help="target data (repeatable)")
    rank_s.add_argument("--backbone", default="fbank",
                        help="'fbank' (log-mel statistics, no pretraining) or a model id / folder (default: fbank)")
    rank_s.add_argument("--modality", default="audio", help="adapter for --backbone (default: audio)")
    rank_s.add_argument("--input-column", default="audio", help="column of inputs in data files (default: audio)")
    rank_s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the interval (default 1000)")
    rank_s.add_argument("--seed", type=int, default=0)
    rank_s.add_argument("--plot", default=None, help="write the target x source heatmap here (PNG)")
    rank_s.add_argument("--json", action="store_true", help="print one JSON object per target instead of the table")

    rank_m = sub.add_parser("rank-models", help="rank candidate backbones for a labelled target by transferability estimators",
                            description="Score each candidate backbone on labelled target data from its (cached) features "
                                        "with LogME, H-score and kNN accuracy; no fine-tuning.")
    rank_m.add_argument("--model", action="append", required=True, metavar="[NAME=][MODALITY:]PATH",
                        help="a candidate backbone (repeat), e.g. minilm=sentence:/models/minilm")
    rank_m.add_argument("--modality", default="text", help="default adapter of candidates (default: text)")
    rank_m.add_argument("--data", required=True, help="labelled target data")
    _add_data_args(rank_m)
    rank_m.add_argument("--task", default="single_label_classification", choices=["single_label_classification", "regression"])
    rank_m.add_argument("--estimators", default="logme,hscore,knn", help="comma-separated (default: logme,hscore,knn)")
    rank_m.add_argument("--json", action="store_true")
    return parser


def _version() -> str:
    from mtransfer import __version__

    return __version__


def cmd_demo(a: argparse.Namespace) -> int:
    from mtransfer.demo import run_demo

    run_demo(a.output_dir, model=a.model, seed=a.seed, epochs_scale=a.epochs_scale, progress_bar=not a.no_progress)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """Flags -> a recipe config -> :func:`mtransfer.config.run_recipe` (the same path as ``recipes/train.py``)."""
    from mtransfer.config import DataSettings, ModelSettings, RecipeConfig, load_recipe_config, run_recipe
    from mtransfer.training import TrainingArguments

    if a.config is not None:
        out = run_recipe(load_recipe_config(a.config, a.config_overrides))
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(out))
        return 0
    if a.config_overrides:
        raise ValueError(f"{a.config_overrides[0]!r}: section.key=value overrides need --config (flags use --set key=value).")
    missing = [f"--{n.replace('_', '-')}" for n in ("model", "train", "output_dir") if getattr(a, n) is None]
    if missing:
        raise ValueError(f"train needs {', '.join(missing)} (or --config with a recipe file).")
    settings = dict(output_dir=a.output_dir, strategy=a.strategy, num_epochs=a.epochs, learning_rate=a.lr,
                    head_learning_rate=a.head_lr, last_n=a.last_n, batch_size=a.batch_size, seed=a.seed,
                    progress_bar=not a.no_progress, resume_from_checkpoint="latest" if a.resume else None)
    settings.update(parse_overrides(a.overrides))
    args = TrainingArguments(**settings)  # bad settings fail here, before any loading
    max_length_key = "max_tokens" if a.modality == "static_vectors" else "max_length"
    adapter = {k: v for k, v in ((max_length_key, a.max_length), ("pooling", a.pooling)) if v is not None}
    for pair in a.adapter_settings:
        if "=" not in pair:
            raise ValueError(f"--adapter {pair!r}: expected key=value.")
        key, raw = pair.split("=", 1)
        adapter[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    head = {"hidden_sizes": [int(x) for x in a.hidden_sizes.split(",") if x.strip()]}
    config = RecipeConfig(
        ModelSettings(modality=a.modality, name_or_path=a.model, adapter=adapter, head=head, seed=a.seed),
        DataSettings(train=a.train, validation=a.validation, input_column=a.input_column, label_column=a.label_column,
                     task=a.task, label_separator=a.label_separator),
        args, source="mtransfer train")
    out = run_recipe(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    import mtransfer as mt

    model = mt.TransferModel.from_pretrained(a.model_dir)
    data = mt.load_labeled(a.data, input_column=a.input_column, label_column=a.label_column, task=model.task,
                           label_names=None if model.task == "regression" else model.label_names,
                           label_separator=a.label_separator)
    args = mt.TrainingArguments(output_dir=a.model_dir, eval_batch_size=a.batch_size, report_to=[], progress_bar=False)
    print(json.dumps(mt.Trainer(model, args, eval_dataset=data).evaluate()))
    return 0


def _predict_inputs(source: str, column: str, adapter_type: str) -> list[Any]:
    """What ``predict --input`` names: stdin lines, a table column, media files (a file or a folder) or text lines."""
    import mtransfer as mt
    from mtransfer.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    suffixes = {"image": IMAGE_SUFFIXES, "torch": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}.get(adapter_type)
    if source == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    path = Path(source).expanduser()
    if path.is_dir():
        if suffixes is None:
            raise ValueError(f"--input {source}: a folder is for image or audio models; this model reads {adapter_type} inputs.")
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"--input {source}: no files ending in {', '.join(suffixes)} in the folder.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"--input {source}: no such file or folder.")
    if path.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        return mt.load_labeled(str(path), input_column=column, label_column=None).inputs
    if suffixes is not None and path.suffix.lower() in suffixes:
        return [str(path)]
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def cmd_predict(a: argparse.Namespace) -> int:
    import mtransfer as mt

    model = mt.TransferModel.from_pretrained(a.model_dir)
    inputs = _predict_inputs(a.input, a.input_column, model.adapter.adapter_type)
    preds = model.predict(inputs, batch_size=a.batch_size)
    scores = None if model.task == "regression" else model.predict_proba(inputs, batch_size=a.batch_size)
    for i, (x, p) in enumerate(zip(inputs, preds)):
        row: dict[str, Any] = {"input": x, "prediction": p}
        if scores is not None:
            row["scores"] = {name: round(float(s), 6) for name, s in zip(model.label_names, scores[i])}
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _named(spec: str, what: str) -> tuple[str, str]:
    if "=" in spec:
        name, path = spec.split("=", 1)
        if not name or not path:
            raise ValueError(f"{what} {spec!r}: expected NAME=PATH.")
        return name, path
    return Path(spec).stem or spec, spec


def cmd_export(a: argparse.Namespace) -> int:
    import mtransfer as mt
    from mtransfer.export import export_transformers

    print(export_transformers(mt.TransferModel.from_pretrained(a.model_dir), a.output))
    return 0


def cmd_card(a: argparse.Namespace) -> int:
    from mtransfer.export import write_model_card

    path = write_model_card(a.run_dir, a.folder, model_name=a.name, datasets=a.dataset, license=a.license,
                            language=a.language)
    print(path)
    return 0


def cmd_push(a: argparse.Namespace) -> int:
    from mtransfer.export import HubError, push_to_hub

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

    sources = dict(_named(s, "--source") for s in a.source)
    if len(sources) < 2:
        raise ValueError(f"--source: give at least two candidate sources (NAME=PATH); got {list(sources)}.")
    targets = dict(_named(t, "--target") for t in a.target)
    for name, path in {**sources, **targets}.items():
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{name}={path}: no such file or folder.")
    result = rank_sources(sources, targets, backbone=a.backbone, modality=a.modality, input_column=a.input_column,
                          bootstrap=a.bootstrap, seed=a.seed)
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
    import mtransfer as mt
    from mtransfer.ranking.validate import parse_candidate, rank_models

    candidates = [parse_candidate(m, a.modality) for m in a.model]
    estimators = [e.strip() for e in a.estimators.split(",") if e.strip()]
    data = mt.load_labeled(a.data, input_column=a.input_column, label_column=a.label_column, task=a.task)
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


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "rank-sources": cmd_rank_sources, "rank-models": cmd_rank_models, "card": cmd_card, "push": cmd_push,
            "export": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[a.command](a)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"mtransfer {a.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
