import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtransfer.cli import main, parse_overrides


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("verb", ["demo", "train", "pretrain", "evaluate", "predict", "rank-sources", "rank-models",
                                  "adapt-speech", "tabular", "card", "push", "export"])
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: mtransfer " + verb in capsys.readouterr().out


def test_modalities_table_is_the_registry():
    from mtransfer.adapters import ADAPTERS, get_adapter_class
    from mtransfer.modalities import BUILTIN_MODALITIES

    for name in BUILTIN_MODALITIES:
        get_adapter_class(name)
    assert set(BUILTIN_MODALITIES) == set(ADAPTERS)
    for name, (summary, column) in BUILTIN_MODALITIES.items():
        assert (ADAPTERS[name].summary, ADAPTERS[name].default_input_column) == (summary, column)


@pytest.mark.parametrize("argv", [["modalities"], ["--help"], *[[verb, "--help"] for verb in (
    "demo", "train", "pretrain", "evaluate", "predict", "rank-sources", "rank-models", "adapt-speech", "tabular", "card",
    "push", "export")]])
def test_commands_that_load_no_model_import_no_torch(argv):
    code = ("import sys\nfrom mtransfer.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'accelerate', 'datasets') if m in sys.modules)\n"
            "print('HEAVY', heavy)" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"
    if argv == ["modalities"]:
        assert out.splitlines()[0].startswith("text            a transformers text encoder") and len(out.splitlines()) == 7


def test_a_text_model_loads_without_the_other_adapters(tiny_bert):
    code = ("import sys\nfrom mtransfer.model import TransferModel\n"
            "m = TransferModel.from_backbone('text', %r, labels=['a', 'b'])\n"
            "print(sorted(k for k in sys.modules if k.startswith(('mtransfer.adapters.', 'timm', "
            "'sentence_transformers', 'gensim'))))" % str(tiny_bert))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['mtransfer.adapters.base', 'mtransfer.adapters.text']"


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("mtransfer")  # the entry point pip installed, not python -m
    assert script.is_file(), f"no console script {script}"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: mtransfer ") and "demo" in out.stdout


def test_overrides_are_typed_and_unknown_keys_rejected():
    assert parse_overrides(["num_epochs=3", "learning_rate=1e-4", "report_to=", "progress_bar=false",
                            "last_n=None", "adam_betas=0.8,0.9"]) == {
        "num_epochs": 3, "learning_rate": 1e-4, "report_to": [], "progress_bar": False, "last_n": None,
        "adam_betas": [0.8, 0.9]}
    with pytest.raises(ValueError, match="--set: unknown key training.num_epoch; did you mean training.num_epochs"):
        parse_overrides(["num_epoch=3"])
    with pytest.raises(ValueError, match=r"--set: training.num_epochs is 'three' \(str\); expected int"):
        parse_overrides(["num_epochs=three"])


def test_train_evaluate_predict_round_trip(tiny_bert, topic_data, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", topic_data[0])
    valid = write_csv(tmp_path / "valid.csv", topic_data[1])
    code = main(["train", "--model", str(tiny_bert), "--train", str(train), "--validation", str(valid),
                 "--output-dir", str(tmp_path / "out"), "--strategy", "two_stage", "--epochs", "3", "--lr", "3e-3",
                 "--no-progress", "--set", "report_to=", "--set", "save_checkpoints=false"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["final"]["eval_samples"] == 63
    assert main(["evaluate", "--model-dir", summary["model_dir"], "--data", str(valid)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["eval_accuracy"] == pytest.approx(summary["final"]["eval_accuracy"])
    texts = tmp_path / "texts.txt"
    texts.write_text("bread cheese soup the\ngoal match team a\n")
    assert main(["predict", "--model-dir", summary["model_dir"], "--input", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["input"] for r in rows] == ["bread cheese soup the", "goal match team a"]
    assert set(rows[0]["scores"]) == {"food", "science", "sport"}
    assert sum(rows[0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("keep, kept", [("last", ["epoch_3"]), ("all", ["epoch_1", "epoch_2", "epoch_3"]), ("none", [])])
def test_save_checkpoints_flag(keep, kept, tiny_bert, topic_data, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", topic_data[0])
    valid = write_csv(tmp_path / "valid.csv", topic_data[1])
    assert main(["train", "--model", str(tiny_bert), "--train", str(train), "--validation", str(valid),
                 "--output-dir", str(tmp_path / "out"), "--strategy", "two_stage", "--head-epochs", "1", "--epochs", "3",
                 "--no-progress", "--set", "report_to=", "--save-checkpoints", keep]) == 0
    root = tmp_path / "out" / "checkpoints"
    assert (sorted(p.name for p in root.iterdir()) if root.exists() else []) == kept
    with pytest.raises(SystemExit):
        main(["train", "--save-checkpoints", "epoch"])
    assert "argument --save-checkpoints: invalid choice: 'epoch'" in capsys.readouterr().err


def test_train_errors_are_one_line_and_exit_2(tiny_bert, tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_text("sentence,label\na,x\nb,y\n")
    code = main(["train", "--model", str(tiny_bert), "--train", str(bad), "--output-dir", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.csv: no column 'text'; it has columns 'sentence', 'label'" in err
    code = main(["train", "--model", str(tiny_bert), "--train", str(bad), "--output-dir", str(tmp_path / "o"),
                 "--strategy", "melt"])
    assert code == 2 and "TrainingArguments.strategy='melt'" in capsys.readouterr().err


def test_train_with_static_vectors_builds_the_vocabulary_from_the_training_file(topic_data, tmp_path, capsys):
    from gensim.test.utils import datapath

    import mtransfer as mt

    train = write_csv(tmp_path / "train.csv", topic_data[0])
    code = main(["train", "--modality", "static_vectors", "--model", datapath("test_glove.txt"), "--train", str(train),
                 "--output-dir", str(tmp_path / "sv"), "--strategy", "full", "--epochs", "1", "--lr", "1e-2",
                 "--no-progress", "--set", "report_to=", "--set", "save_checkpoints=false"])
    assert code == 0
    model = mt.TransferModel.from_pretrained(tmp_path / "sv" / "model")
    assert "the" in model.adapter.vocabulary


def test_train_regression_with_two_target_columns(tiny_bert, topic_data, tmp_path, capsys):
    import csv

    import mtransfer as mt

    path = tmp_path / "prices.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "price", "size"])
        w.writeheader()
        for i, r in enumerate(topic_data[0]):
            w.writerow({"text": r["text"], "price": 100 + i, "size": i % 7})
    code = main(["train", "--model", str(tiny_bert), "--train", str(path), "--label-column", "price,size",
                 "--task", "regression", "--output-dir", str(tmp_path / "reg"), "--strategy", "full", "--epochs", "1",
                 "--no-progress", "--set", "report_to=", "--set", "save_checkpoints=false"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = mt.TransferModel.from_pretrained(out["model_dir"])
    assert model.label_names == ["price", "size"] and model.head.config.num_outputs == 2
    assert out["metrics"].endswith("metrics.json")


def test_image_folder_train_and_predict_a_folder(tiny_vision, shape_data, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    for i, row in enumerate(shape_data[0]):
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(row["image"]).save(root / row["label"] / f"{i}.png")
    code = main(["train", "--modality", "image", "--model", str(tiny_vision("resnet")), "--train", str(root),
                 "--input-column", "image", "--output-dir", str(tmp_path / "out"), "--strategy", "frozen", "--epochs", "1",
                 "--adapter", "augmentation={hflip: 0.0, crop_scale: [0.8, 1.0]}", "--no-progress", "--set", "report_to="])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["adapter"]["augmentation"]["crop_scale"] == [0.8, 1.0]
    assert main(["predict", "--model-dir", summary["model_dir"], "--input", str(root / "square")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == len(list((root / "square").glob("*.png"))) and rows[0]["input"].endswith(".png")
    assert set(rows[0]["scores"]) == {"hbar", "square", "vbar"}
    assert main(["predict", "--model-dir", summary["model_dir"], "--input", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_audio_predict_from_a_file(tiny_speech, tmp_path, capsys):
    import mtransfer as mt
    from tests.test_media import write_wav
    from tests.tiny import tone

    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=["a", "b"], seed=0)
    model.save_pretrained(tmp_path / "m")
    write_wav(tmp_path / "x.wav", tone(0.5, 22050)[0].numpy(), 22050)
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(tmp_path / "x.wav")]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["input"] == str(tmp_path / "x.wav") and row["prediction"] in ("a", "b")


def test_train_from_a_recipe_config_with_overrides(tiny_bert, tmp_path, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "text" / "probe.yaml"
    code = main(["train", "--config", str(config), f"model.name_or_path={tiny_bert}", "model.adapter.max_length=16",
                 "training.num_epochs=1", f"training.output_dir={tmp_path / 'out'}", "training.report_to=[]",
                 "training.progress_bar=false", "training.save_checkpoints=false", "training.plot=false"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["test"]["eval_samples"] == 300 and (tmp_path / "out" / "model" / "config.json").is_file()
    assert main(["train", "--model", str(tiny_bert)]) == 2
    assert "train needs --train, --output-dir (or --config with a recipe file)" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "training.num_epoch=1"]) == 2
    assert "unknown key training.num_epoch" in capsys.readouterr().err


def test_predict_runs_each_input_through_the_model_once(tiny_bert, topic_data, tmp_path, capsys, monkeypatch):
    import mtransfer as mt
    from mtransfer.adapters.text import TextAdapter

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["food", "science", "sport"], seed=0)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "in.txt").write_text("bread soup\ngoal match\n")
    calls = []
    original = TextAdapter.preprocess
    monkeypatch.setattr(TextAdapter, "preprocess", lambda self, inputs, **kw: calls.append(list(inputs)) or original(self, inputs, **kw))
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt")]) == 0
    assert calls == [["bread soup", "goal match"]]
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prediction"] for r in rows] == model.predict(["bread soup", "goal match"])


def test_train_takes_head_epochs_threads_and_a_test_split(tiny_bert, topic_data, tmp_path, capsys):
    import torch

    train = write_csv(tmp_path / "train.csv", topic_data[0])
    test = write_csv(tmp_path / "test.csv", topic_data[1])
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--model", str(tiny_bert), "--train", str(train), "--test", str(test), "--output-dir",
                     str(tmp_path / "o"), "--epochs", "3", "--head-epochs", "2", "--no-progress", "--set",
                     "report_to=none", "--set", "save_checkpoints=false", "--num-threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("training on 1 process(es) x 1 torch thread(s), cpu")  # the run's first line
    out = json.loads(printed[-1])
    assert out["test"]["eval_samples"] == len(topic_data[1])
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert [h["phase"] for h in record["history"]] == ["head", "head", "unfreeze all"]
    assert record["test"] == out["test"]  # the run record (and so the card) carries the test metrics


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys; from mtransfer.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_head_lr_sets_the_rate_of_a_frozen_run_through_the_cli(tiny_bert, topic_data, tmp_path, capsys):
    """On the earlier main, --head-lr was ignored by --strategy frozen: losses identical with and without it."""
    train = write_csv(tmp_path / "train.csv", topic_data[0])
    base = ["train", "--model", str(tiny_bert), "--train", str(train), "--output-dir", None, "--epochs", "2",
            "--strategy", "frozen", "--lr", "1e-5", "--no-progress", "--set", "report_to=none", "--set", "plot=false",
            "--set", "save_checkpoints=false"]
    losses = {}
    for name, extra in (("lr only", []), ("head lr", ["--head-lr", "5e-2"]), ("same as --lr", ["--head-lr", "1e-5"])):
        argv = list(base)
        argv[argv.index("--output-dir") + 1] = str(tmp_path / name)
        assert main([*argv, *extra]) == 0
        capsys.readouterr()
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        losses[name] = [h["train_loss"] for h in record["history"]]
        if name == "head lr":
            assert record["args"]["head_learning_rate"] == 5e-2
    assert losses["head lr"] != losses["lr only"]
    assert losses["same as --lr"] == losses["lr only"]  # the flag is the head's rate, nothing else


def test_a_frozen_run_with_no_rate_chooses_it_on_the_cache_and_says_so_in_terminal_record_and_card(
        tiny_bert, topic_data, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", topic_data[0])
    valid = write_csv(tmp_path / "valid.csv", topic_data[1])
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_bert), "--train", str(train), "--validation", str(valid), "--output-dir",
                 str(out), "--epochs", "2", "--strategy", "frozen", "--no-progress", "--set", "report_to=none",
                 "--set", "plot=false"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("head learning rate ") and "on eval_dataset (63 examples)" in lines[1]
    record = json.loads((out / "metrics.json").read_text())
    choice = record["head_search"]
    assert choice["searched"] and record["args"]["head_learning_rate"] is None
    assert record["plan"][0]["peak_lr"]["head"] == choice["learning_rate"]
    assert main(["card", "--run-dir", str(out)]) == 0
    card = (out / "model" / "README.md").read_text()
    assert f"- head-only phase: head learning rate {choice['learning_rate']:g}, weight decay {choice['weight_decay']:g}: " \
           "chosen among 27 candidates trained 2 epoch(s) on cached features, the lowest loss (" in card


def test_the_cli_task_choices_are_the_task_registry():
    from mtransfer.cli import TASK_NAMES
    from mtransfer.tasks import task_names

    assert TASK_NAMES == task_names()
