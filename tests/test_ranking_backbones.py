"""mtransfer.ranking.backbones: backbones ranked by transferability estimators, and scores correlated with results
(checked against real fine-tuning by mtransfer.experiments.validate_rankings)."""

import json


from mtransfer.cli import main
from mtransfer.experiments.validate_rankings import validate_rankings
from mtransfer.ranking.backbones import Candidate, correlate, parse_candidate, rank_models


def test_rank_models_and_validation_harness(tiny_bert, tiny_sentence, topic_data, tmp_path, capsys):
    import mtransfer as mt

    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    candidates = [Candidate("bert", "text", str(tiny_bert)), Candidate("sbert", "sentence", str(tiny_sentence)),
                  Candidate("bert_random", "text", str(tiny_bert), {"pretrained": False})]
    scores = rank_models(candidates, train)
    assert set(scores) == {"bert", "sbert", "bert_random"} and set(scores["bert"]) == {"logme", "hscore", "knn"}
    report = validate_rankings(candidates, train, val, output_dir=tmp_path / "v", training={"num_epochs": 3})
    assert set(report.achieved) == set(scores) and set(report.agreement) == {"logme", "hscore", "knn"}
    assert (tmp_path / "v" / "report.json").is_file() and (tmp_path / "v" / "agreement.png").is_file()
    assert "kendall_tau" in report.table()
    assert parse_candidate("m=sentence:/x") == Candidate("m", "sentence", "/x")
    assert parse_candidate("/models/bert") == Candidate("/models/bert", "text", "/models/bert")
    csv_path = tmp_path / "t.csv"
    import csv

    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(topic_data[0])
    capsys.readouterr()  # the harness's epoch lines
    assert main(["rank-models", "--model", f"bert={tiny_bert}", "--model", f"sbert=sentence:{tiny_sentence}",
                 "--data", str(csv_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["scores"]) == {"bert", "sbert"}
    # the same backbone under two poolings and two lengths: per-candidate settings reach the adapter
    assert parse_candidate(f"cls=text:{tiny_bert},pooling=cls,max_length=8") == Candidate("cls", "text", str(tiny_bert),
                                                                                         {"pooling": "cls", "max_length": 8})
    assert main(["rank-models", "--model", f"mean={tiny_bert},pooling=mean", "--model", f"cls={tiny_bert},pooling=cls,max_length=64",
                 "--model", f"short={tiny_bert}", "--max-length", "4", "--pooling", "cls", "--data", str(csv_path),
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert scores["mean"] != scores["cls"] and scores["short"] != scores["cls"]
    assert main(["rank-models", "--model", f"cls={tiny_bert},pooling=cls,max_length=4", "--data", str(csv_path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["cls"] == scores["short"]
    assert main(["rank-models", "--model", str(tiny_bert), "--data", str(csv_path), "--estimators", "leep"]) == 2
    assert "leep need a source model's outputs" in capsys.readouterr().err


def test_correlate_counts_orderings():
    perfect = correlate({"a": 1, "b": 2, "c": 3}, {"a": 0.1, "b": 0.5, "c": 0.9})
    assert perfect["kendall_tau"] == 1.0 and perfect["spearman_rho"] == 1.0 and perfect["top1_hit"]
    reversed_ = correlate({"a": 3, "b": 2, "c": 1}, {"a": 0.1, "b": 0.5, "c": 0.9})
    assert reversed_["kendall_tau"] == -1.0 and not reversed_["top1_hit"] and reversed_["predicted_best"] == "a"


def test_ties_are_reported_as_ties_not_by_listing_order():
    from mtransfer.ranking import correlate

    tied = {"a": 0.5, "b": 0.5, "c": 0.1}
    achieved = {"a": 0.9, "b": 0.4, "c": 0.2}
    for order in (tied, dict(reversed(list(tied.items())))):
        out = correlate(order, achieved)
        assert out["top1_hit"] == "tie" and set(out["predicted_best"].split(", ")) == {"a", "b"}
    assert correlate({"a": 0.5, "b": 0.5, "c": 0.1}, {"a": 0.9, "b": 0.9, "c": 0.2})["top1_hit"] is True
    assert correlate({"a": 0.1, "b": 0.5, "c": 0.5}, {"a": 0.9, "b": 0.4, "c": 0.2})["top1_hit"] is False
