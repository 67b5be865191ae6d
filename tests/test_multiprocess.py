"""The same training code under `accelerate launch` with 2 CPU processes (gloo)."""

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import mtransfer as mt
from tests.tiny import topic_examples

ROOT = Path(__file__).resolve().parents[1]


def launch_report(proc) -> str:
    """What a failed `accelerate launch` printed: each rank's own traceback first (the launcher's summary hides which
    rank failed first and why), then the tails."""
    ranks = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"\[rank(\d+)\]:", line)
        if m:
            ranks.setdefault(m.group(1), []).append(line)
    per_rank = "\n".join("\n".join(lines[-40:]) for _, lines in sorted(ranks.items()))
    return per_rank + "\n--- stdout ---\n" + proc.stdout[-2000:] + "\n--- stderr ---\n" + proc.stderr[-2000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_cpu(script, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``script`` with 2 CPU processes (one thread each, offline), from the repository root."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def launch_ranks(script, bert, out: Path, *extra) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Launch ``script`` on 2 CPU processes; each rank's ``rank<i>.json`` (checked to say a world of 2), and the run."""
    proc = launch_two_cpu(script, bert, out, *extra)
    assert proc.returncode == 0, launch_report(proc)
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    return ranks, proc


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_disjoint_shards_and_metrics_count_each_example_once(tiny_bert, tmp_path):
    out = tmp_path / "ddp"
    ranks, proc = launch_ranks("tests/launch_worker.py", tiny_bert, out)
    assert {r["distributed_type"] for r in ranks} == {"DistributedType.MULTI_CPU"}
    for epoch in ("1", "2"):
        a, b = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(a) == len(b) == 48
        assert not set(a) & set(b)  # disjoint shards
        assert sorted(a + b) == list(range(96))  # together, every example once
    assert ranks[0]["seen"]["1"] != ranks[0]["seen"]["2"]  # reshuffled each epoch
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # gradients were synchronised
    # head-only, then every group: the wrapper is rebuilt per phase, so DDP never searches for unused parameters
    assert "find_unused_parameters" not in proc.stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # the head stage's rate, chosen on the main process and broadcast: every process trained at the same one
    assert metrics["head_search"]["searched"] and ranks[0]["head_choice"] == ranks[1]["head_choice"] == metrics["head_search"]
    assert metrics["plan"][0]["peak_lr"]["head"] == metrics["head_search"]["learning_rate"]
    assert [h["eval_samples"] for h in metrics["history"]] == [63, 63]
    assert metrics["final_eval"]["eval_samples"] == 63
    # the gathered metric equals a single-process evaluation of the saved model on all 63 rows
    rng = random.Random(0)
    topic_examples(rng, 32)
    rows = topic_examples(rng, 21)
    model = mt.TransferModel.from_pretrained(out / "model")
    preds = model.predict([r["text"] for r in rows])
    accuracy = sum(p == r["label"] for p, r in zip(preds, rows)) / len(rows)
    assert metrics["final_eval"]["eval_accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_shipped_config_with_its_defaults_finishes_on_two_processes(tiny_bert, tmp_path):
    """Trackers on and a test split: the run used to die in the test evaluation ("Default process group has not been
    initialized") because training ended the process group along with the trackers."""
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / "recipes/train.py"),
           "--config", str(ROOT / "recipes/configs/text/two_stage.yaml"), f"model.name_or_path={tiny_bert}",
           "model.adapter.max_length=16", "training.num_epochs=2", f"training.output_dir={out}",
           "training.progress_bar=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, launch_report(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    from mtransfer.builtins import DATA

    assert result["test"]["eval_samples"] == len(DATA["builtin:fortunes"].splits()["test"])
    # the gathered test accuracy is the saved model's, evaluated again in one process
    import mtransfer as mt

    model = mt.TransferModel.from_pretrained(out / "model")
    test = mt.load_labeled("builtin:fortunes", split="test", label_names=model.label_names)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "again"), report_to=[], progress_bar=False)
    again = mt.Trainer(model, args, eval_dataset=test).evaluate()
    assert result["test"]["eval_accuracy"] == pytest.approx(again["eval_accuracy"])
    assert list((out / "logs").rglob("events.out.tfevents*"))  # the tracker ran and was flushed
    assert "Traceback" not in proc.stderr
    assert "find_unused_parameters" not in proc.stderr  # DDP's "unnecessary traversal" warning


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ctc_run_gathers_every_utterance_once(tiny_speech, tmp_path):
    """Disjoint shards, and the gathered WER / CER equal one process's evaluation of the saved model."""
    out = tmp_path / "ctc"
    proc = launch_two_cpu("tests/launch_ctc_worker.py", tiny_speech("wav2vec2"), out)
    assert proc.returncode == 0, launch_report(proc)
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert {r["distributed_type"] for r in ranks} == {"DistributedType.MULTI_CPU"}
    for epoch in ("1", "2"):
        a, b = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert not set(a) & set(b) and sorted(a + b) == list(range(12))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_eval"]["eval_samples"] == 7
    from tests.launch_ctc_worker import TEXTS, data

    model = mt.TransferModel.from_pretrained(out / "model")
    args = mt.TrainingArguments(output_dir=str(tmp_path / "eval"), eval_batch_size=2, report_to=[], progress_bar=False)
    single = mt.Trainer(model, args, eval_dataset=data(TEXTS[:7])).evaluate()
    assert single["eval_samples"] == 7
    assert single["eval_wer"] == pytest.approx(metrics["final_eval"]["eval_wer"])
    assert single["eval_cer"] == pytest.approx(metrics["final_eval"]["eval_cer"])
