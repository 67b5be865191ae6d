"""The language-ID source scorer on the espeak-ng corpus, the rank CLI verbs and the validation harness."""

import json

import numpy as np
import pytest

from mtransfer.cli import main
from mtransfer.ranking import SourceScores, rank_sources
from mtransfer.experiments.validate_rankings import validate_rankings
from mtransfer.ranking.backbones import Candidate, correlate, parse_candidate, rank_models

SOURCES = ["bn", "hi", "tr", "ru", "de"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mtransfer.builtins.speech_corpus import build_speech_corpus

    root = build_speech_corpus(tmp_path_factory.mktemp("espeak"), SOURCES + ["as"], per_language=60, speakers=4, workers=2)
    import csv

    by_language: dict[str, list[str]] = {}
    with open(root / "metadata.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_language.setdefault(row["language"], []).append(str(root / row["file_name"]))
    return root, by_language


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["fbank", "tiny-wav2vec2"])
def test_assamese_picks_bengali_as_its_source(backbone, corpus, tiny_speech, tmp_path):
    _, langs = corpus
    model = "fbank" if backbone == "fbank" else str(tiny_speech("wav2vec2"))
    scores = rank_sources({k: langs[k] for k in SOURCES}, {"as": langs["as"]}, backbone=model, bootstrap=200)
    ranking = scores.rankings[0].ranking
    assert ranking[0]["source"] == "bn", scores.table()
    assert scores.matrix.shape == (1, 5) and np.isclose(scores.matrix.sum(), 1.0)
    for r in ranking:
        assert r["ci"][0] <= r["score"] <= r["ci"][1]
    assert scores.lid_accuracy > 1 / 5  # the sources can be told apart
    scores.plot(tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert json.loads(scores.to_json(tmp_path / "s.json"))["targets"][0]["ranking"][0]["source"] == "bn"


@pytest.fixture(scope="module")
def varied_corpus(tmp_path_factory):
    """A corpus in which every utterance has its own voice variant, pitch and speed."""
    import csv

    from mtransfer.builtins.speech_corpus import build_speech_corpus, plan_corpus

    plan = plan_corpus(["bn", "de"], 12, speakers=4, voice_per_utterance=True, seed=3)
    assert len({(u.variant, u.pitch, u.speed) for u in plan}) >= 20  # voices differ per utterance, not per speaker
    root = build_speech_corpus(tmp_path_factory.mktemp("varied"), ["bn", "hi", "ru", "de", "as"], per_language=40,
                               speakers=4, workers=2, voice_per_utterance=True, seed=3)
    by_language: dict[str, list[str]] = {}
    with open(root / "metadata.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_language.setdefault(row["language"], []).append(str(root / row["file_name"]))
    return by_language


@pytest.mark.slow
@pytest.mark.parametrize("scorer", ["mfcc", "mfcc-frames"])
def test_cepstral_scorers_pick_bengali_for_assamese_when_every_utterance_has_its_own_voice(scorer, varied_corpus):
    sources = {k: varied_corpus[k] for k in ("bn", "hi", "ru", "de")}
    scores = rank_sources(sources, {"as": varied_corpus["as"]}, backbone=scorer, bootstrap=100)
    assert scores.featurizer == scorer and scores.rankings[0].best == "bn", scores.table()
    assert scores.lid_accuracy >= 0.5  # four sources: chance 0.25
    assert np.isclose(scores.matrix.sum(), 1.0)


def test_the_frame_features_are_normalised_per_utterance_and_stacked_in_context():
    from mtransfer.ranking.lid import MfccFeaturizer

    rng = np.random.default_rng(0)
    clip = (np.sin(np.arange(16000) * 0.05) * 0.3 + rng.normal(size=16000) * 0.05).astype(np.float32)
    frames = MfccFeaturizer(frame_level=True, context=2, stride=1).frames((clip, 16000))
    assert frames.shape == (98, 3 * 20 * 5)  # 1 s at a 10 ms hop, 25 ms windows; cepstra + deltas + delta-deltas, 5 frames
    centre = frames[:, 2 * 60:2 * 60 + 20]  # the centre frame's cepstra: zero mean, unit spread per utterance
    assert np.allclose(centre.mean(0), 0, atol=1e-4) and np.allclose(centre.std(0), 1, atol=1e-3)
    louder = MfccFeaturizer(frame_level=True, context=2, stride=1).frames((clip * 4, 16000))
    assert np.allclose(louder[:, 2 * 60:2 * 60 + 20], centre, atol=1e-3)  # a channel gain is normalised away
    stats = MfccFeaturizer()([(clip, 16000), (clip * 4, 16000)])
    assert stats.shape == (2, 60) and np.allclose(stats[0, 20:], stats[1, 20:], atol=1e-3)  # spreads ignore the gain


def test_several_targets_make_a_matrix_and_a_table():
    rng = np.random.default_rng(0)
    src = {"a": [(rng.normal(size=800) * 0.1, 16000) for _ in range(12)],
           "b": [(np.sin(np.arange(800) * 0.3) * 0.5 + rng.normal(size=800) * 0.01, 16000) for _ in range(12)]}
    tgt = {"like_a": src["a"][:4], "like_b": src["b"][:4]}
    scores = rank_sources(src, tgt, bootstrap=50)
    assert scores.featurizer == "mfcc"  # the default
    assert isinstance(scores, SourceScores) and scores.targets == ["like_a", "like_b"]
    assert [r.best for r in scores.rankings] == ["a", "b"]
    table = scores.table().splitlines()
    assert table[0].split()[:3] == ["target", "a", "b"] and table[1].endswith("a") and table[2].endswith("b")
    with pytest.raises(ValueError, match="at least two candidate sources"):
        rank_sources({"a": src["a"]}, tgt)
    with pytest.raises(ValueError, match=r"C=0: expected a positive number, or 'cv'"):
        rank_sources(src, tgt, C=0)


def test_rank_sources_cli_json_and_errors(corpus, tmp_path, capsys):
    root, langs = corpus
    code = main(["rank-sources", "--source", f"bn={root / 'bn'}", "--source", f"de={root / 'de'}", "--source",
                 f"ru={root / 'ru'}", "--target", f"as={root / 'as'}", "--bootstrap", "100", "--json",
                 "--plot", str(tmp_path / "h.png")])
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["target"] == "as" and [r["source"] for r in row["ranking"]][0] == "bn"
    assert set(row["ranking"][0]) == {"source", "score", "ci"} and (tmp_path / "h.png").is_file()
    assert main(["rank-sources", "--source", f"bn={root / 'bn'}", "--source", "xx=/no/such", "--target", str(root / "as")]) == 2
    assert "xx=/no/such: no such file or folder" in capsys.readouterr().err


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


def test_an_interval_from_too_few_target_inputs_is_undefined_not_a_point(caplog):
    """On the earlier main, one target utterance gave the interval [0.61, 0.61]."""
    from mtransfer.ranking.lid import MIN_INTERVAL_INPUTS

    rng = np.random.default_rng(0)
    src = {"a": [(rng.normal(size=800) * 0.1, 16000) for _ in range(12)],
           "b": [(np.sin(np.arange(800) * 0.3) * 0.5 + rng.normal(size=800) * 0.01, 16000) for _ in range(12)]}
    tgt = {"one": src["a"][:1], "few": src["a"][:MIN_INTERVAL_INPUTS - 1], "enough": src["a"][:MIN_INTERVAL_INPUTS]}
    scores = rank_sources(src, tgt, bootstrap=200)
    by = {r.target: r.ranking for r in scores.rankings}
    assert all(row["ci"] is None for t in ("one", "few") for row in by[t])
    assert all(row["ci"][0] <= row["score"] <= row["ci"][1] for row in by["enough"])
    assert "target one: 1 input(s), fewer than the 5 a bootstrap interval needs; its interval is undefined" in caplog.text
    assert json.loads(json.dumps(scores.to_dict()))["targets"][0]["ranking"][0]["ci"] is None  # valid JSON, no NaN
