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
