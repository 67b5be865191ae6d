"""mtransfer.record: the run record every artifact reads."""

import json

import pytest

from mtransfer.record import BestEpoch, RunRecord, mtransfer_version


def test_a_record_round_trips_and_a_foreign_file_is_named(tmp_path):
    record = RunRecord(args={"strategy": "frozen"}, plan=[{"name": "head"}], layer_groups=["embeddings", "head"],
                       train_samples=10, history=[{"epoch": 1, "train_loss": 0.5}],
                       best=BestEpoch("eval_accuracy", 0.8, 1), weights_epoch=1, weights_are_best=True)
    path = record.save(tmp_path / "metrics.json")
    again = RunRecord.load(path)
    assert again == record and isinstance(again.best, BestEpoch)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="other.json"):
        RunRecord.load(tmp_path / "other.json")


def test_the_version_comes_from_the_installed_distribution():
    from importlib.metadata import version

    assert mtransfer_version() == version("mtransfer")
