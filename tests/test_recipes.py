"""Shipped recipe configs validate without loading weights; recipes smoke-run on tiny models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtransfer.config import load_recipe_config
from tests.test_multiprocess import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").rglob("*.yaml"))


def test_there_are_configs():
    for modality in ("text", "image", "audio"):
        assert {p.stem for p in CONFIGS if p.parent.name == modality} >= {
            "probe", "two_stage", "full", "discriminative", "gradual_unfreezing"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "recipes" / "configs")))
def test_every_shipped_config_validates_and_documents_its_launch_command(path):
    config = load_recipe_config(path)
    header = path.read_text().splitlines()[:3]
    assert any("accelerate launch" in line and str(path.relative_to(ROOT)) in line for line in header)
    import yaml

    from mtransfer.strategies import STRATEGIES

    raw = yaml.safe_load(path.read_text())
    # what the file says, read through the config parser (not a default that would pass for any file)
    assert config.training.strategy == raw["training"]["strategy"] and config.training.strategy in STRATEGIES
    assert config.model.name_or_path == raw["model"]["name_or_path"]


def smoke_overrides(tiny_bert, out):
    return [f"model.name_or_path={tiny_bert}", "model.adapter.max_length=16", "training.num_epochs=2",
            "training.head_epochs=1", f"training.output_dir={out}", "training.report_to=[]", "training.progress_bar=false",
            "training.save_checkpoints=false", "training.plot=false"]


def tiny_overrides(config, tiny_bert, tiny_vision, tiny_speech) -> list[str]:
    """Swap a config's real backbone for a tiny random one of the same modality."""
    modality = config.model.modality
    if modality == "text":
        return [f"model.name_or_path={tiny_bert}", "model.adapter.max_length=16"]
    if modality == "image":
        return [f"model.name_or_path={tiny_vision('vit')}"]
    if modality == "torch":
        return ["model.name_or_path=tests.tiny:make_small_cnn", "model.adapter.image_size=32"]
    if modality == "audio" and config.data.task == "ctc":  # a smoke run starts from the tiny encoder, not a trained model
        return [f"model.name_or_path={tiny_speech('wav2vec2')}", "model.init_from=null", "training.batch_size=16"]
    if modality == "audio":
        return [f"model.name_or_path={tiny_speech('wav2vec2')}"]
    raise AssertionError(f"no tiny model for modality {modality!r}")


TEST_SAMPLES = {"text": 300, "image": 400, "torch": 400, "audio": 60}


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_smoke_runs_on_a_tiny_model(path, tiny_bert, tiny_vision, tiny_speech, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import train as recipe
    finally:
        sys.path.pop(0)
    config = load_recipe_config(path)
    overrides = smoke_overrides(tiny_bert, tmp_path / "out")[1:] + tiny_overrides(config, tiny_bert, tiny_vision, tiny_speech)
    overrides = [o for o in overrides if not o.startswith("model.adapter.max_length")] + (
        ["model.adapter.max_length=16"] if config.model.modality == "text" else [])
    if config.training.strategy == "gradual_unfreezing":
        overrides.append("training.num_epochs=3")
    assert recipe.main(["--config", str(path), *overrides]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["test"]["eval_samples"] == (50 if config.data.task == "ctc" else TEST_SAMPLES[config.model.modality])
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def test_recipe_rejects_bad_overrides_before_loading(capsys):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import train as recipe
    finally:
        sys.path.pop(0)
    assert recipe.main(["--config", str(CONFIGS[0]), "training.batch_sise=4"]) == 2
    assert "unknown key training.batch_sise; did you mean training.batch_size" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.multiprocess
def test_recipe_under_two_process_accelerate_launch(tiny_bert, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / "recipes/train.py"),
           "--config", str(ROOT / "recipes/configs/text/two_stage.yaml"), *smoke_overrides(tiny_bert, tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["final_eval"]["eval_samples"] == 120
