"""Model cards from real runs, push dry runs, and an unreachable Hub."""

import os
import subprocess
import sys

import pytest

import mtransfer as mt
from mtransfer.cli import main


@pytest.fixture(scope="module")
def run_dir(tiny_bert, topic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(out), strategy="two_stage", num_epochs=3, head_epochs=1,
                                learning_rate=1e-3, progress_bar=False, report_to=[], save_checkpoints=False)
    mt.Trainer(model, args, train, val).train()
    return out


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


def _snippet(card_text: str) -> str:
    return card_text.split("## Use", 1)[1].split("```python", 1)[1].split("```", 1)[0]


def _run_snippet(code: str, cwd) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


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
    assert 'pipeline("text-classification", model="hf", trust_remote_code=True)' in code
    out = _run_snippet(code, cwd=tmp_path)
    assert all(label in out for label in ("food", "science", "sport"))

    assert main(["card", "--run-dir", str(run)]) == 0
    native = ModelCard.load(run / "model" / "README.md")
    assert native.data.library_name == "mtransfer"
    code = _snippet(native.text)
    assert 'mt.TransferModel.from_pretrained("model")' in code
    assert _run_snippet(code, cwd=run).strip().strip("[]'") in ("food", "science", "sport")
    # titles: the repo's name, else base model + dataset, never the strategy or the run folder; no placeholder link
    assert main(["card", "--run-dir", str(run), "--folder", str(tmp_path / "hf"), "--repo-id", "me/topic-bert"]) == 0
    text = (tmp_path / "hf" / "README.md").read_text()
    assert "# topic-bert" in text and 'model="me/topic-bert"' in text and "github.com/mtransfer" not in text
    assert main(["card", "--run-dir", str(run), "--dataset", "me/fortunes"]) == 0
    title = (run / "model" / "README.md").read_text().split("\n# ", 1)[1].splitlines()[0]
    assert title.endswith("-finetuned-fortunes") and "two_stage" not in title and str(tmp_path) not in title


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
        assert str(tmp_path) not in text and "builtin:" not in text
        assert f"from `{hub or 'a local model (my-bert)'}`" in text
        assert f"| metric | validation ({record.eval_samples} examples) | test (21 examples) |" in text
        assert "| accuracy | " in text and " | 0.5000 |" in text
        assert "on the validation data" in text


def test_push_dry_run_lists_exactly_the_files(run_dir, capsys):
    folder = run_dir / "model"
    assert main(["push", "--folder", str(folder), "--repo-id", "me/topic-bert", "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = sorted(line.split()[0] for line in out[1:])
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert listed == expected and "config.json" in listed and "backbone/model.safetensors" in listed
    assert out[0].startswith(f"would upload {len(expected)} files") and "private" in out[0]


def test_push_to_an_unreachable_hub_fails_in_one_line(run_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_secret_token_value"}
    proc = subprocess.run([sys.executable, "-m", "mtransfer.cli", "push", "--folder", str(run_dir / "model"),
                           "--repo-id", "me/topic-bert"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtransfer push: error: Cannot push") and "127.0.0.1:9" in err[0]
    assert "Traceback" not in proc.stderr and "hf_secret_token_value" not in proc.stderr + proc.stdout


def pipeline_scores(results, label_names):
    """A pipeline's ``top_k=None`` output as a tensor in label order. Shape: ``(n, labels)``."""
    import torch

    return torch.tensor([[{r["label"]: r["score"] for r in rows}[n] for n in label_names] for rows in results])


@pytest.mark.parametrize("arch", ["vit", "convnext", "resnet"])
def test_image_export_gives_the_same_pipeline_scores(arch, tiny_vision, shape_data, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from mtransfer.export import export_transformers

    rows = shape_data[1][:4]
    model = mt.TransferModel.from_backbone("image", tiny_vision(arch), labels=["hbar", "square", "vbar"], seed=0)
    folder = export_transformers(model, tmp_path / "hf")
    pipe = pipeline("image-classification", model=str(folder))
    got = pipeline_scores(pipe([Image.fromarray(r["image"]) for r in rows], top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba([r["image"] for r in rows]), atol=1e-5)
    assert pipe.model.config.problem_type == "single_label_classification"


def test_regression_and_multilabel_exports_come_out_right(tiny_vision, shape_data, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from mtransfer.export import export_transformers

    images = [r["image"] for r in shape_data[1][:3]]
    reg = mt.TransferModel.from_backbone("image", tiny_vision("resnet"), labels=["price"], task="regression", seed=0)
    reg.head.set_target_stats(torch.tensor([[100.0], [300.0], [250.0]]))
    pipe = pipeline("image-classification", model=str(export_transformers(reg, tmp_path / "reg")))
    values = [rows[0]["score"] for rows in pipe([Image.fromarray(x) for x in images], top_k=None)]
    assert values == pytest.approx(reg.predict(images), abs=1e-3)  # no softmax/sigmoid: original units
    multi = mt.TransferModel.from_backbone("image", tiny_vision("vit"), labels=["a", "b", "c"],
                                           task="multi_label_classification", seed=0)
    pipe = pipeline("image-classification", model=str(export_transformers(multi, tmp_path / "multi")))
    got = pipeline_scores(pipe([Image.fromarray(x) for x in images], top_k=None), multi.label_names)
    assert torch.allclose(got, multi.predict_proba(images), atol=1e-5)  # independent sigmoids


@pytest.mark.parametrize("arch", ["wav2vec2", "hubert", "w2v-bert"])
def test_audio_export_gives_the_same_pipeline_scores(arch, tiny_speech, tmp_path):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers
    from tests.tiny import tone

    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=["x", "y", "z"], seed=0, max_duration=0.5)
    pipe = pipeline("audio-classification", model=str(export_transformers(model, tmp_path / "hf")))
    # the last two are longer than max_duration (training crops): evaluation and the pipeline both read the whole clip
    clips = [tone(0.4, 16000, (300.0,))[0].numpy(), tone(1.3, 16000, (900.0, 1200.0))[0].numpy(),
             tone(3.1, 16000, (500.0,))[0].numpy()]
    for clip in clips:
        got = pipeline_scores([pipe(clip, top_k=None)], model.label_names)
        assert torch.allclose(got, model.predict_proba([(clip, 16000)]), atol=1e-5)


def test_text_export_when_the_classifier_reads_the_same_feature(tiny_bert, tmp_path, capsys):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["neg", "pos"], pooling="pooler", seed=0,
                                           max_length=8)
    model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model-dir", str(tmp_path / "m"), "--output", str(tmp_path / "hf")]) == 0
    pipe = pipeline("text-classification", model=str(tmp_path / "hf"))
    texts = ["bread cheese soup", "goal match team the"]
    got = pipeline_scores(pipe(texts, top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    # the native classifier cannot truncate by itself: the tokenizer carries the training length for truncation=True
    got = pipeline_scores(pipe([LONG, LONG + " x"], top_k=None, truncation=True), model.label_names)
    assert torch.allclose(got, model.predict_proba([LONG, LONG + " x"]), atol=1e-5)
    mlp = mt.TransferModel.from_backbone("text", tiny_bert, labels=["neg", "pos"], pooling="pooler",
                                         head={"hidden_sizes": [8]}, seed=0)
    with pytest.raises(ValueError, match="an MLP head has no transformers-native form"):
        export_transformers(mlp, tmp_path / "no")
    assert not (tmp_path / "no").exists()


LONG = "bread cheese soup goal match team atom energy " * 4  # 32 words, far over max_length=8


@pytest.mark.parametrize("pooling, hidden", [("mean", []), ("cls", [8])])
def test_text_export_with_a_registered_custom_head(pooling, hidden, tiny_bert, tmp_path):
    """Mean / CLS pooling (and MLP heads) have no native BERT classifier: the export ships its model code."""
    import json

    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["food", "science", "sport"], pooling=pooling,
                                           head={"hidden_sizes": hidden}, seed=0, max_length=8)
    folder = export_transformers(model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("MTransferForSequenceClassification")
    assert (folder / "hf_custom.py").is_file()
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 8
    pipe = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    # longer than the 8 training tokens: the exported model truncates as the tokenizer did in training, so a
    # pipeline called without truncation=True agrees (it used to score the whole text)
    texts = ["bread cheese soup", "goal match team the", "atom energy", LONG, LONG + " the end"]
    assert len(model.adapter.tokenizer(LONG)["input_ids"]) > 8
    got = pipeline_scores(pipe(texts, top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    got = pipeline_scores(pipe(texts, top_k=None, truncation=True), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    got = pipeline_scores(pipe(texts, top_k=None, batch_size=5), model.label_names)  # padded batches
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)


def test_text_regression_export_in_original_units(tiny_bert, tmp_path):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["stars"], task="regression", seed=0)
    model.head.set_target_stats(torch.tensor([[1.0], [5.0], [4.0]]))
    pipe = pipeline("text-classification", model=str(export_transformers(model, tmp_path / "hf")), trust_remote_code=True)
    texts = ["bread cheese soup", "goal match team the"]
    assert [r[0]["score"] for r in pipe(texts, top_k=None)] == pytest.approx(model.predict(texts), abs=1e-4)
