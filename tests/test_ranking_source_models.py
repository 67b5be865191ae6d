"""mtransfer.ranking.source_models: model-based estimates of how well each trained CTC source model suits a target."""

import json

import pytest

import mtransfer as mt
from mtransfer.ranking.source_models import combine, head_probe_cer, quality_cer, rank_source_models, zero_shot_cer
from tests.test_speech import ctc_data

SOURCE_TEXTS = ["ab ba", "abc", "cab cc", "ba", "a bc ab", "cc a b", "b a", "ac"]
TARGET_TEXTS = ["ab", "ca b", "bb a", "c ab", "a c", "ba c"]


@pytest.fixture(scope="module")
def sources(tiny_speech, tmp_path_factory):
    """Two CTC source runs (model folder and run record) on the same encoder: one trained 3 epochs, one 1."""
    root = tmp_path_factory.mktemp("source-models")
    data = ctc_data(SOURCE_TEXTS)
    runs = {}
    for name, epochs in (("strong", 3), ("weak", 1)):
        model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc",
                                               seed=0)
        args = mt.TrainingArguments(output_dir=str(root / name), strategy="full", num_epochs=epochs, learning_rate=3e-3,
                                    batch_size=4, eval_batch_size=4, metric_for_best_model="cer", progress_bar=False,
                                    report_to=[], plot=False, show_transcripts=False)
        mt.Trainer(model, args, data, data).train()
        runs[name] = root / name / "model"
    return runs


def target():
    train = ctc_data(TARGET_TEXTS)
    return train, ctc_data(TARGET_TEXTS[:4], vocabulary=train.vocabulary)


def test_each_estimate_is_what_it_says(sources, tmp_path):
    train, valid = target()
    # the head probe is a frozen run of a new head (shared rows copied) whose best validation CER it returns
    probe = head_probe_cer(sources["strong"], train, valid, epochs=2, batch_size=4, cache_dir=str(tmp_path / "c"))
    model = mt.TransferModel.from_pretrained(sources["strong"]).with_new_head(train.vocabulary, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "by-hand"), strategy="frozen", num_epochs=2,
                                learning_rate=5e-3, lr_schedule="constant", batch_size=4, eval_batch_size=16,
                                metric_for_best_model="cer", seed=0, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=False, show_transcripts=False, cache_dir=str(tmp_path / "c"))
    by_hand = mt.Trainer(model, args, train, valid).train()
    assert probe == pytest.approx(by_hand.best_value if by_hand.best_value is not None else 1.0)
    # zero-shot: the source model's own evaluation on the target's transcripts
    zero = zero_shot_cer(sources["weak"], valid)
    evaluated = mt.Trainer(mt.TransferModel.from_pretrained(sources["weak"]),
                           mt.TrainingArguments(output_dir=str(tmp_path / "eval"), eval_batch_size=16, report_to=[],
                                                progress_bar=False), eval_dataset=ctc_data(TARGET_TEXTS[:4])).evaluate()
    assert zero == pytest.approx(evaluated["eval_cer"])
    # quality: the source run's own final validation CER
    record = json.loads((sources["weak"].parent / "metrics.json").read_text())
    assert quality_cer(sources["weak"]) == record["final_eval"]["eval_cer"]


def test_rank_source_models_scores_every_source_by_every_method_with_its_cost(sources, tmp_path):
    train, valid = target()
    ranked = rank_source_models(sources, train, valid, methods=("head", "zero-shot", "quality"), epochs=1,
                                batch_size=4, cache_dir=str(tmp_path / "c"))
    assert set(ranked) == {"head", "zero-shot", "quality"}
    for method, by_source in ranked.items():
        assert set(by_source) == {"strong", "weak"}
        for r in by_source.values():
            assert r["score"] == pytest.approx(1.0 - r["cer"]) and r["seconds"] >= 0
    # the weak source (one epoch) scored worse on its own validation data than the strong one (three)
    assert ranked["quality"]["strong"]["score"] > ranked["quality"]["weak"]["score"]


def test_bad_requests_are_refused_before_any_work(sources, tiny_bert, tmp_path):
    train, valid = target()
    with pytest.raises(ValueError, match="methods='lid': expected some of head, zero-shot, quality"):
        rank_source_models(sources, train, valid, methods=("lid",))
    with pytest.raises(ValueError, match="needs at least two source models"):
        rank_source_models({"strong": sources["strong"]}, train, valid)
    with pytest.raises(FileNotFoundError, match="source 'x': .* is not a model folder"):
        rank_source_models({**sources, "x": tmp_path}, train, valid)
    text = mt.TransferModel.from_backbone("text", tiny_bert, labels=["a", "b"])
    with pytest.raises(ValueError, match="a single_label_classification model; ranking source models for a speech "
                                         "target needs CTC models"):
        zero_shot_cer(text, valid)
    lone = tmp_path / "lone"
    mt.TransferModel.from_pretrained(sources["weak"]).save_pretrained(lone)
    with pytest.raises(FileNotFoundError, match="no run record beside the model folder"):
        quality_cer(lone)


def test_combine_averages_normalised_ranks_ties_sharing_them():
    assert combine({"a": 0.9, "b": 0.1, "c": 0.5}, {"a": 0.2, "b": 0.3, "c": 0.9}) == {"a": 0.5, "b": 0.25, "c": 0.75}
    assert combine({"a": 1.0, "b": 1.0, "c": 0.0}) == {"a": 0.75, "b": 0.75, "c": 0.0}
    assert combine({"a": 1.0, "b": 0.0, "z": 3.0}, {"a": 0.0, "b": 1.0}) == {"a": 0.5, "b": 0.5}  # sources in both
    with pytest.raises(ValueError, match="at least two sources"):
        combine({"a": 1.0}, {"a": 2.0})


def test_rank_models_ranks_ctc_models_on_a_speech_target_from_the_command_line(sources, tmp_path, capsys):
    import csv

    from mtransfer.cli import main
    from tests.test_media import write_wav
    from tests.test_speech import clip

    for name, texts in (("train", TARGET_TEXTS), ("valid", TARGET_TEXTS[:4])):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["audio", "transcript"])
            writer.writeheader()
            for i, text in enumerate(texts):
                write_wav(tmp_path / f"{name}{i}.wav", *clip(i))
                writer.writerow({"audio": f"{name}{i}.wav", "transcript": text})
    base = ["rank-models", "--task", "ctc", "--model", f"strong={sources['strong']}", "--model", f"weak={sources['weak']}",
            "--data", str(tmp_path / "train.csv"), "--label-column", "transcript"]
    assert main([*base, "--validation", str(tmp_path / "valid.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["scores"]) == {"head", "zero-shot", "quality"}
    assert set(out["scores"]["head"]) == {"strong", "weak"}
    assert main([*base, "--validation", str(tmp_path / "valid.csv"), "--estimators", "zero-shot"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split() == ["model", "zero-shot", "CER", "seconds"] and len(table) == 3
    assert main(base) == 2
    assert "rank-models --task ctc needs --validation" in capsys.readouterr().err
