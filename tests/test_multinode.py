"""Two machines, as Accelerate launches them: ``--num_machines 2 --machine_rank R --main_process_ip ... --main_process_port
P`` (c10d rendezvous, gloo on CPU), each "node" in its own working directory, the run and cache folders on a shared
path, here on localhost. The runs must equal one process with the same global batch, resume after one node's process
is killed, and leave every output to the main process of the main node."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtransfer.cli import main as cli_main
from tests.test_multiprocess import free_port
from tests.tiny import build_tiny_bert, topic_examples

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def launch_nodes(shared: Path, argv: list[str], *, env: dict | None = None, timeout: float = 300) -> list[dict]:
    """``mtransfer`` ``argv`` as two one-process machines on localhost (tests/launch_node.py under
    ``accelerate launch`` with recipes/accelerate/multi_node.yaml); each node's return code and output."""
    accelerate = Path(sys.executable).with_name("accelerate")
    port = free_port()
    nodes = []
    for rank in (0, 1):
        workdir = shared.parent / f"node{rank}"
        workdir.mkdir(exist_ok=True)
        cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/multi_node.yaml"),
               "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               str(ROOT / "tests/launch_node.py"), *map(str, argv)]
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MTRANSFER_TEST_SHARED": str(shared),
                    "MTRANSFER_CACHE": str(shared / "cache"), **(env or {})}
        nodes.append(subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    results = []
    try:
        for proc in nodes:
            out, err = proc.communicate(timeout=timeout)
            results.append({"returncode": proc.returncode, "stdout": out, "stderr": err})
    finally:
        for proc in nodes:  # a node left waiting on a dead peer: end it and its workers
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return results


def report(nodes: list[dict]) -> str:
    return "\n".join(f"--- node {i} (rc {n['returncode']}) ---\n{n['stdout'][-1500:]}\n{n['stderr'][-3000:]}"
                     for i, n in enumerate(nodes))


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if k in ("epoch", "phase", "train_loss", "eval_loss", "eval_accuracy", "eval_cer",
                                                  "eval_wer")}
            for h in json.loads((run / "metrics.json").read_text())["history"]]


def assert_same_run(a: Path, b: Path, tol: float = 1e-4) -> None:
    """The same per-epoch metrics (within float tolerance: the gradients are summed in another order) and weights."""
    ha, hb = history(a), history(b)
    assert [(h["epoch"], h["phase"]) for h in ha] == [(h["epoch"], h["phase"]) for h in hb]
    for x, y in zip(ha, hb):
        for key in x:
            if isinstance(x[key], float):
                assert x[key] == pytest.approx(y[key], rel=tol, abs=tol), (key, ha, hb)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-4, rtol=1e-4), key


def written(shared: Path, rank: int) -> list[str]:
    return json.loads((shared / "audit" / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def text_task(tmp_path_factory):
    """A tiny BERT without dropout (so the two layouts draw no different random masks) and a 3-topic task in CSVs."""
    root = tmp_path_factory.mktemp("multinode-text")
    bert = build_tiny_bert(root / "bert", dropout=0.0)
    rng = random.Random(0)
    for name, per_topic in (("train", 32), ("valid", 8), ("test", 8)):
        with open(root / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"])
            writer.writeheader()
            writer.writerows(topic_examples(rng, per_topic))
    return root, bert


def text_argv(root: Path, bert: Path, out: Path, batch_size: int) -> list[str]:
    """The shipped two-stage text recipe, on the tiny task: 2 head epochs (features from the shared cache), then 2 of
    every layer; no head dropout (its masks would differ between the layouts)."""
    return ["train", "--config", str(ROOT / "recipes/configs/text/two_stage.yaml"), f"model.name_or_path={bert}",
            "model.head.dropout=0.0", "model.adapter.max_length=16", f"data.train={root / 'train.csv'}",
            f"data.validation={root / 'valid.csv'}", f"data.test={root / 'test.csv'}", "training.num_epochs=4",
            "training.head_epochs=2", "training.learning_rate=1e-3", f"training.batch_size={batch_size}",
            f"training.output_dir={out}", "training.progress_bar=false", "training.report_to=[]"]


def test_two_nodes_train_like_one_process_resume_after_a_kill_and_only_the_main_node_writes(text_task, tmp_path):
    root, bert = text_task
    one = tmp_path / "one"
    assert cli_main(text_argv(root, bert, one, batch_size=16)) == 0  # one process, global batch 16

    shared = tmp_path / "shared"
    nodes = launch_nodes(shared, text_argv(root, bert, shared / "run", batch_size=8))  # 2 x 8
    assert all(n["returncode"] == 0 for n in nodes), report(nodes)
    assert "Rank 1 is connected to 1 peer ranks" in nodes[1]["stdout"] + nodes[1]["stderr"]  # a real 2-machine group
    assert json.loads((shared / "run" / "metrics.json").read_text())["num_processes"] == 2
    assert_same_run(shared / "run", one)
    # the test split was evaluated over both machines, every row once
    final = json.loads(nodes[0]["stdout"].strip().splitlines()[-1])
    assert final["test"]["eval_samples"] == 24
    # only the main process of the main node wrote the model and the record; node 1 wrote no run output (nothing at all
    # into its own working directory) and at most its share of the feature cache
    assert {"run/model", "run/metrics.json"} <= set(written(shared, 0))
    assert all(p.startswith("cache/") for p in written(shared, 1)), written(shared, 1)
    assert not [p for p in (tmp_path / "node1").iterdir()]
    # the shared cache holds one entry per split, equal to one process's extraction
    entries = [p.parent for p in (shared / "cache").rglob("meta.json")]
    assert len(entries) == 2  # train and validation features of the head stage
    single = Path(os.environ["MTRANSFER_CACHE"])  # where the one-process run extracted the same entries
    for entry in entries:
        twin = next(single.rglob(entry.name))
        shards = sorted(p.name for p in entry.glob("shard_*.safetensors"))
        assert shards and shards == sorted(p.name for p in twin.glob("shard_*.safetensors"))
        for name in shards:
            a, b = load_file(entry / name), load_file(twin / name)
            assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not {p for p in written(shared, 0) if "shard_" in p} & {p for p in written(shared, 1) if "shard_" in p}

    # a kill -9 of node 1's process after epoch 3's checkpoint; both nodes relaunched with --resume end like the
    # uninterrupted run
    resumed = tmp_path / "shared2"
    nodes = launch_nodes(resumed, text_argv(root, bert, resumed / "run", batch_size=8),
                         env={"MTRANSFER_TEST_KILL_EPOCH": "3", "MTRANSFER_TEST_KILL_RANK": "1"})
    assert all(n["returncode"] != 0 for n in nodes), report(nodes)
    assert (resumed / "run" / "checkpoints" / "epoch_3").is_dir()
    assert not (resumed / "run" / "model").exists() and not (resumed / "run" / "metrics.json").exists()
    nodes = launch_nodes(resumed, [*text_argv(root, bert, resumed / "run", batch_size=8), "--resume"])
    assert all(n["returncode"] == 0 for n in nodes), report(nodes)
    assert "resum" in (nodes[0]["stdout"] + nodes[0]["stderr"]).lower()
    assert_same_run(resumed / "run", shared / "run", tol=1e-6)


def test_a_ctc_run_on_two_nodes_equals_one_process_with_the_same_global_batch(tiny_speech, tmp_path):
    """The speech recipe (two-stage: CTC head on cached frames, then the encoder) with a tiny wav2vec2 whose
    SpecAugment masks are off (they are drawn per process)."""
    from tests.test_media import write_wav
    from tests.test_speech import clip

    encoder = tmp_path / "encoder"
    __import__("shutil").copytree(tiny_speech("wav2vec2"), encoder)
    config = json.loads((encoder / "config.json").read_text())
    (encoder / "config.json").write_text(json.dumps({**config, "mask_time_prob": 0.0}))
    texts = ["ab ba", "abc", "cab cc", "ba", "a bc ab", "cc a b", "b a", "ac", "bb ca", "c", "a", "abc ab"]
    for name, part in (("train", texts[:8]), ("valid", texts[8:]), ("test", texts[8:])):
        (tmp_path / "audio").mkdir(exist_ok=True)
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["audio", "transcript"])
            writer.writeheader()
            for text in part:
                k = texts.index(text)
                write_wav(tmp_path / "audio" / f"{k}.wav", *clip(k))
                writer.writerow({"audio": f"audio/{k}.wav", "transcript": text})

    def argv(out: Path, batch_size: int) -> list[str]:
        return ["train", "--config", str(ROOT / "recipes/configs/speech/ctc_two_stage.yaml"),
                f"model.name_or_path={encoder}", "model.head.dropout=0.0", f"data.train={tmp_path / 'train.csv'}",
                f"data.validation={tmp_path / 'valid.csv'}", f"data.test={tmp_path / 'test.csv'}",
                "data.label_column=transcript", "training.num_epochs=3", "training.head_epochs=1",
                "training.learning_rate=3e-3", f"training.batch_size={batch_size}", "training.eval_batch_size=2",
                f"training.output_dir={out}", "training.progress_bar=false", "training.report_to=[]"]

    assert cli_main(argv(tmp_path / "one", batch_size=4)) == 0
    shared = tmp_path / "shared"
    nodes = launch_nodes(shared, argv(shared / "run", batch_size=2))
    assert all(n["returncode"] == 0 for n in nodes), report(nodes)
    assert_same_run(shared / "run", tmp_path / "one")
    assert history(tmp_path / "one")[-1]["eval_cer"] == pytest.approx(history(shared / "run")[-1]["eval_cer"])
    assert all(p.startswith("cache/") for p in written(shared, 1)), written(shared, 1)
