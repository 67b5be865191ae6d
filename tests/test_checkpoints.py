"""Checkpoints: what a damaged or crafted checkpoint does on --resume, and saving under several processes."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.test_training import make


class _RunsCode:
    """A crafted pickle: calls ``open(marker, "w")`` when it is loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def interrupted(tiny_bert, topic_data, tmp_path):
    """A 2-epoch frozen run's folder holding only its first checkpoint, as a run killed in epoch 2 leaves it."""
    common = dict(strategy="frozen", num_epochs=2, save_checkpoints="all")
    make(tiny_bert, topic_data, tmp_path, **common).train()
    root = tmp_path / "run" / "checkpoints"
    shutil.rmtree(root / "epoch_2")
    return root / "epoch_1", common


def test_a_truncated_random_state_file_stops_the_resume_in_one_line(interrupted, tiny_bert, topic_data, tmp_path):
    """On the earlier main, Accelerate skipped it with an info-level note and the resumed run ended differently."""
    checkpoint, common = interrupted
    states = checkpoint / "random_states_0.pkl"
    states.write_bytes(states.read_bytes()[:40])
    with pytest.raises(ValueError) as err:
        make(tiny_bert, topic_data, tmp_path, resume_from_checkpoint="latest", **common).train()
    assert str(err.value).startswith(f"{states}: cannot read the random-number states (")
    assert str(err.value).endswith(f"the file is missing or damaged. A run resumed without them would not end as the "
                                   f"uninterrupted run: delete {checkpoint} to resume from the checkpoint before it, or "
                                   "start the run again.")


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl"])
def test_a_crafted_pickle_in_a_checkpoint_is_refused_in_one_line_naming_it(name, interrupted, tiny_bert, topic_data,
                                                                            tmp_path):
    """On the earlier main, the weights-only refusal ended in an UnpicklingError traceback suggesting weights_only=False."""
    checkpoint, common = interrupted
    marker = tmp_path / "ran.marker"
    torch.save({"state": _RunsCode(str(marker))}, checkpoint / name)
    with pytest.raises(ValueError) as err:
        make(tiny_bert, topic_data, tmp_path, resume_from_checkpoint="latest", **common).train()
    assert str(err.value).startswith(f"{checkpoint / name}: refused: it holds Python objects beyond")
    assert "Do not trust this" in str(err.value) and "weights_only=False" not in str(err.value)
    assert not marker.exists()


def test_a_crafted_pytorch_model_bin_in_a_model_folder_is_refused_in_one_line(tiny_bert, tmp_path, capsys):
    import mtransfer as mt
    from mtransfer.cli import main

    mt.TransferModel.from_backbone("text", tiny_bert, labels=["a", "b"], seed=0).save_pretrained(tmp_path / "m")
    backbone = tmp_path / "m" / "backbone"
    (backbone / "model.safetensors").unlink()
    marker = tmp_path / "ran.marker"
    torch.save({"bert.embeddings.word_embeddings.weight": _RunsCode(str(marker))}, backbone / "pytorch_model.bin")
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", "-"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mtransfer predict: error: {backbone / 'pytorch_model.bin'}: refused: it holds Python objects beyond "
                   "tensors, which would run code when loaded. Do not trust this file; load weights only from a source "
                   "you trust (safetensors files hold no code).")
    assert not marker.exists()
    # as a backbone given to train (from_backbone) too
    (tmp_path / "t.csv").write_text("text,label\na b,x\nc d,y\n")
    assert main(["train", "--model", str(backbone), "--train", str(tmp_path / "t.csv"), "--output-dir",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    assert "pytorch_model.bin: refused" in capsys.readouterr().err and not marker.exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_finish_writing_before_the_checkpoint_folder_is_renamed(tiny_bert, tmp_path):
    from tests.test_multiprocess import launch_report, launch_two_cpu

    out = tmp_path / "race"
    proc = launch_two_cpu("tests/launch_checkpoint_race.py", tiny_bert, out, "2.0")
    assert proc.returncode == 0, launch_report(proc)
    assert all((out / f"rank{i}.json").is_file() for i in range(2))
    for epoch in (1, 2):
        names = {p.name for p in (out / "checkpoints" / f"epoch_{epoch}").iterdir()}
        assert {"random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"} <= names
    assert not list((out / "checkpoints").glob(".*"))  # no temporary folder left
