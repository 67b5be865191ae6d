"""mtransfer.ranking.lid: the language-ID source scorer on the espeak-ng corpus, and the rank-sources verb."""

import json

import numpy as np
import pytest

from mtransfer.cli import main
from mtransfer.ranking import SourceScores, rank_sources

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
    # each score with its interval (on the earlier main the table showed none); 4 target inputs: undefined
    assert f"{scores.rankings[0].scores[0]:.3f} [-]*" in table[1]
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
    enough = scores.rankings[2]
    lo, hi = enough.ci[0]
    assert f"{enough.scores[0]:.3f} [{lo:.2f},{hi:.2f}]*" in scores.table().splitlines()[3]
