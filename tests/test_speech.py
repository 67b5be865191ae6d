"""Speech recognition on the shared core: CTC heads, vocabularies, decoding, error rates, sequential transfer, export."""

import json
import re

import pytest
import torch

import mtransfer as mt
from mtransfer.speech.vocabulary import Vocabulary
from tests.tiny import tone

TEXTS = ["ab ba", "abc", "cab cc", "ba", "a bc ab", "cc a b"]


def clip(i: int, seconds: float | None = None):
    return (tone(seconds or (0.6 + 0.15 * i), 16000, (200.0 + 97 * i, 1100.0 - 31 * i))[0].numpy(), 16000)


def ctc_data(texts=TEXTS, **kwargs):
    rows = [{"audio": clip(i), "text": t} for i, t in enumerate(texts)]
    return mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc", **kwargs)


@pytest.mark.parametrize("arch", ["wav2vec2", "hubert", "w2v-bert"])
def test_ctc_training_lowers_the_loss_on_a_fixed_batch(arch, tiny_speech):
    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=data.vocabulary, task="ctc", seed=0)
    assert model.head.config.input_dim == model.adapter.backbone.config.hidden_size
    batch = model.adapter.preprocess(data.inputs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(batch, data.targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("arch", ["wav2vec2", "w2v-bert"])
def test_input_lengths_come_from_the_encoders_real_output_lengths(arch, tiny_speech):
    """A padded batch gives every utterance the loss it has alone: the frames of the padding are not fed to CTC."""
    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=data.vocabulary, task="ctc",
                                           seed=0).eval()
    batch = model.adapter.preprocess(data.inputs)
    out = model(batch)
    expected = model.adapter.backbone._get_feat_extract_output_lengths(batch["lengths"])
    assert out.mask.sum(1).tolist() == expected.tolist()
    samples = [x[0].shape[0] for x in data.inputs]  # what a clip of that many samples gives, computed apart
    assert model.adapter.output_frames(torch.tensor(samples)).tolist() == expected.tolist()
    assert len(set(expected.tolist())) > 1  # the batch really is padded
    with torch.no_grad():
        together = [torch.nn.functional.ctc_loss(
            out.logits[i:i + 1, :int(n)].float().log_softmax(-1).transpose(0, 1), data.targets[i][data.targets[i] >= 0][None],
            torch.tensor([int(n)]), torch.tensor([int((data.targets[i] >= 0).sum())]), zero_infinity=True).item()
            for i, n in enumerate(expected)]
        alone = []
        for i, x in enumerate(data.inputs):
            one = model(model.adapter.preprocess([x]), data.targets[i:i + 1][:, :int((data.targets[i] >= 0).sum())])
            alone.append(one.loss.item())
    assert alone == pytest.approx(together, rel=1e-4)


def test_ctc_datasets_name_their_bad_rows(tiny_speech):
    with pytest.raises(ValueError, match=r"column 'text' rows 1 have an empty transcript after normalisation"):
        ctc_data(["ab", "?!", "ba"])
    assert len(ctc_data(["ab", "?!", "ba"], bad_transcripts="skip")) == 2
    with pytest.raises(ValueError, match=r"column 'text' row 1 is None; expected a transcript"):
        ctc_data(["ab", None])
    vocab = ctc_data().vocabulary
    with pytest.raises(ValueError, match=r"2 units in 1 rows \(first row 1\) are not in the vocabulary: \['x', 'y'\]"):
        ctc_data(["ab", "xy"], vocabulary=vocab, unknown_units="error")
    counted = ctc_data(["ab", "xy a"], vocabulary=vocab)
    assert counted.unknown_units == 2 and counted.targets[1].tolist()[:2] == [1, 1]
    assert len(ctc_data(["ab", "xy"], vocabulary=vocab, unknown_units="skip")) == 1
    with pytest.raises(ValueError, match="no column 'transcript'"):
        mt.load_labeled([{"audio": clip(0), "text": "a"}], input_column="audio", label_column="transcript", task="ctc")
    # a transcript longer than its audio's encoder frames is named before training starts
    rows = [{"audio": clip(0, 0.3), "text": "abc " * 10}, {"audio": clip(1), "text": "ab"}]
    data = mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc")
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc")
    args = mt.TrainingArguments(output_dir="/nonexistent/never-written", num_epochs=1, progress_bar=False, report_to=[])
    with pytest.raises(ValueError, match=r"1 transcripts are longer than the encoder's output for their audio \(row 0: 39 "
                                         r"symbols for 14 frames\)"):
        mt.Trainer(model, args, data).train()


def test_two_stage_ctc_run_reports_wer_cer_and_reloads_the_same_transcripts(tiny_speech, tmp_path, capsys):
    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path), strategy="two_stage", num_epochs=2, head_epochs=1,
                                learning_rate=3e-3, batch_size=3, progress_bar=False, report_to=[], plot=False)
    result = mt.Trainer(model, args, data, data).train()
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["best"]["metric"] == "eval_wer" and {"eval_wer", "eval_cer"} <= set(record["final_eval"])
    assert [h["phase"] for h in record["history"]] == ["head", "unfreeze all"]
    out = capsys.readouterr().out
    shown = re.findall(r"  ref: (.*)\n  hyp: ", out)  # a few reference / hypothesis pairs at each evaluation
    assert shown and set(shown) <= set(TEXTS), out
    again = mt.TransferModel.from_pretrained(result.model_dir)
    assert again.vocabulary == model.vocabulary
    assert again.transcribe(data.inputs) == model.transcribe(data.inputs)
    assert again.predict(data.inputs[:1]) == again.transcribe(data.inputs[:1]) and isinstance(again.predict(data.inputs[:1])[0], str)


def test_with_new_head_keeps_the_backbone_and_copies_shared_ctc_rows(tiny_speech, tmp_path):
    source = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=source.vocabulary, task="ctc", seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "src"), strategy="full", num_epochs=1, learning_rate=3e-3,
                                batch_size=3, progress_bar=False, report_to=[], plot=False)
    mt.Trainer(model, args, source).train()
    trained = mt.TransferModel.from_pretrained(tmp_path / "src" / "model")
    target = ctc_data(["abd dd", "da b", "bad", "dab a"])  # shares a, b and the specials; d is new; c is gone
    new = mt.TransferModel.from_pretrained(tmp_path / "src" / "model").with_new_head(target.vocabulary, seed=1)
    old_backbone, new_backbone = trained.adapter.state_dict(), new.adapter.state_dict()
    assert old_backbone.keys() == new_backbone.keys()
    assert all(torch.equal(old_backbone[k], new_backbone[k]) for k in old_backbone)  # bit for bit
    assert new.label_names == target.vocabulary.symbols and new.copied_rows == 5  # [PAD] [UNK] | a b
    for symbol in ("[PAD]", "|", "a", "b"):
        i, j = trained.label_names.index(symbol), new.label_names.index(symbol)
        assert torch.equal(new.head.out.weight[j], trained.head.out.weight[i])
        assert torch.equal(new.head.out.bias[j], trained.head.out.bias[i])
    d = new.label_names.index("d")
    assert not any(torch.equal(new.head.out.weight[d], row) for row in trained.head.out.weight)
    before = new.head.out.weight.detach().clone()
    args = mt.TrainingArguments(output_dir=str(tmp_path / "tgt"), strategy="frozen", num_epochs=2, learning_rate=1e-2,
                                batch_size=2, progress_bar=False, report_to=[], plot=False)
    mt.Trainer(new, args, target).train()
    assert not torch.equal(before.cpu(), new.head.out.weight.cpu())  # the new head trains


def test_with_new_head_turns_a_text_classifier_into_the_start_of_another_task(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "a"), strategy="full", num_epochs=1, learning_rate=1e-3,
                                progress_bar=False, report_to=[], plot=False)
    mt.Trainer(model, args, train).train()
    trained = mt.TransferModel.from_pretrained(tmp_path / "a" / "model")
    rows = [{"text": r["text"], "label": "yes" if r["label"] == "sport" else "no"} for r in topic_data[0]]
    second = mt.load_labeled(rows)
    new = mt.TransferModel.from_pretrained(tmp_path / "a" / "model").with_new_head(second.label_names, seed=0)
    assert new.label_names == ["no", "yes"] and new.head.config.num_outputs == 2
    sa, sb = trained.adapter.state_dict(), new.adapter.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "b"), strategy="two_stage", num_epochs=2, learning_rate=1e-3,
                                progress_bar=False, report_to=[], plot=False)
    result = mt.Trainer(new, args, second).train()
    assert result.history[0]["train_loss"] > 0 and mt.TransferModel.from_pretrained(result.model_dir).label_names == ["no", "yes"]


@pytest.mark.parametrize("kind, arch", [("characters", "wav2vec2"), ("phones", "wav2vec2"), ("characters", "w2v-bert")])
def test_ctc_export_gives_the_same_transcripts_in_the_asr_pipeline(kind, arch, tiny_speech, tmp_path):
    from transformers import pipeline

    from mtransfer.export import export_transformers

    if kind == "phones":
        vocab = Vocabulary.from_texts(["नमस्ते दुनिया", "मेरा नाम"], kind="phones", language="hi")
    else:
        vocab = Vocabulary.from_texts(["abc de fgh ij"])
    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=vocab, task="ctc", seed=0)
    with torch.no_grad():
        model.head.out.weight.mul_(20)  # a random head that emits varied symbols, delimiters and blanks
    folder = export_transformers(model, tmp_path / "hf")
    native = {"wav2vec2": "Wav2Vec2ForCTC", "w2v-bert": "Wav2Vec2BertForCTC"}[arch]
    assert json.loads((folder / "config.json").read_text())["architectures"] == [native]
    pipe = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")  # where `model` runs
    clips = [clip(i) for i in range(20)]
    ours = model.transcribe(clips)
    theirs = [pipe({"raw": c, "sampling_rate": 16000})["text"] for c, _ in clips]
    assert ours == theirs
    assert len(set(ours)) > 10 and any(" " in t for t in ours)  # not a trivial (empty or constant) transcript


def _wav_csv(folder, texts=TEXTS):
    import csv

    from mtransfer.builtins.speech_corpus import write_wav

    (folder / "wav").mkdir(parents=True, exist_ok=True)
    with open(folder / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "text"])
        for i, t in enumerate(texts):
            write_wav(folder / "wav" / f"{i}.wav", clip(i)[0])
            w.writerow([str(folder / "wav" / f"{i}.wav"), t])
    return folder / "train.csv"


def test_cli_trains_evaluates_predicts_and_starts_from_a_trained_speech_model(tiny_speech, tmp_path, capsys):
    from mtransfer.cli import main

    data = _wav_csv(tmp_path)
    common = ["--input-column", "audio", "--label-column", "text", "--task", "ctc", "--no-progress", "--batch-size", "3"]
    assert main(["train", "--modality", "audio", "--model", str(tiny_speech("wav2vec2")), "--train", str(data),
                 "--validation", str(data), "--test", str(data), "--output-dir", str(tmp_path / "a"), "--epochs", "2",
                 "--lr", "3e-3", *common]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"eval_wer", "eval_cer"} <= set(result["test"])
    assert main(["evaluate", "--model-dir", str(tmp_path / "a" / "model"), "--data", str(data), "--input-column", "audio",
                 "--label-column", "text"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["eval_samples"] == len(TEXTS)
    assert main(["predict", "--model-dir", str(tmp_path / "a" / "model"), "--input", str(data), "--input-column", "audio"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    model = mt.TransferModel.from_pretrained(tmp_path / "a" / "model")
    assert [r["transcript"] for r in rows] == model.transcribe([r["input"] for r in rows])
    # sequential transfer from the command line: the trained model's vocabulary (the whole head carries over)
    assert main(["train", "--init-from", str(tmp_path / "a" / "model"), "--train", str(data), "--vocabulary", "model",
                 "--output-dir", str(tmp_path / "b"), "--epochs", "1", "--strategy", "frozen", *common]) == 0
    captured = capsys.readouterr()
    # on the earlier main the copied-row count was only logged at INFO (not shown), though the README said it was logged
    n = len(model.label_names)
    assert f"init_from {tmp_path / 'a' / 'model'}: copied {n} of {n} output rows" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["copied_rows"] == n
    second = mt.TransferModel.from_pretrained(tmp_path / "b" / "model")
    assert second.vocabulary == model.vocabulary
    # the encoder did not train under "frozen": bit for bit the first model's
    a, b = model.adapter.state_dict(), second.adapter.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # --vocabulary model without a CTC model to take it from
    assert main(["train", "--modality", "audio", "--model", str(tiny_speech("wav2vec2")), "--train", str(data),
                 "--vocabulary", "model", "--output-dir", str(tmp_path / "c"), *common]) == 2
    assert "data.vocabulary=model takes the vocabulary of model.init_from" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["wav2vec2", "w2v-bert"])
def test_ctc_head_only_phases_read_cached_frames(arch, tiny_speech, tmp_path):
    """Frozen CTC training extracts the frames once (memory-mapped, a sequence per utterance) and then runs the head
    alone; losses and error rates equal those of recomputing the frozen encoder every epoch."""
    from mtransfer.cache import FeatureCache, FrameCacheEntry
    from tests.test_cache import count_backbone_calls

    train, val = ctc_data(), ctc_data(TEXTS[:4])
    val = mt.load_labeled([{"audio": x, "text": t} for x, t in zip(val.inputs, val.references)], input_column="audio",
                          label_column="text", task="ctc", vocabulary=train.vocabulary)

    def run(cache_features, out):
        model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=train.vocabulary, task="ctc", seed=0)
        calls = count_backbone_calls(model)
        args = mt.TrainingArguments(output_dir=str(tmp_path / out), strategy="frozen", num_epochs=3, learning_rate=3e-2,
                                    batch_size=4, eval_batch_size=4, progress_bar=False, report_to=[], plot=False,
                                    save_checkpoints=False, cache_features=cache_features, cache_dir=str(tmp_path / "c"),
                                    show_transcripts=False)
        trainer = mt.Trainer(model, args, train, val)
        result = trainer.train()
        return calls["n"], result, trainer

    cached_calls, cached, trainer = run(True, "cached")
    assert cached_calls == 2 + 1  # one extraction pass over 6 training and 4 validation clips
    uncached_calls, uncached, _ = run(False, "raw")
    assert uncached_calls == 3 * (2 + 1) + 1
    for a, b in zip(cached.history, uncached.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-4)
        assert (a["eval_cer"], a["eval_wer"]) == (b["eval_cer"], b["eval_wer"])
    assert cached.history[-1]["train_loss"] < cached.history[0]["train_loss"]
    # the entry holds each clip's valid frames only, as the encoder gives them
    model = trainer.unwrapped
    device = next(model.parameters()).device  # where the cache was written (the GPU when there is one)
    entry = FeatureCache(tmp_path / "c").features(model.adapter, train.inputs, frames=True)
    assert isinstance(entry, FrameCacheEntry)
    frames, mask = entry.frame_rows([3, 0])
    with torch.no_grad():
        batch = model.adapter.preprocess([train.inputs[3], train.inputs[0]])
        feats = model.adapter.eval().forward_features({k: v.to(device) for k, v in batch.items()})
    assert mask.sum(1).tolist() == feats.mask.sum(1).tolist()
    for j in range(2):
        n = int(mask[j].sum())  # another batch shape: another GPU kernel, hence the looser bound there
        assert torch.allclose(frames[j, :n], feats.tokens[j, :n].cpu(), atol=1e-5 if device.type == "cpu" else 2e-3)
    with pytest.raises(TypeError, match="holds frames"):
        entry.rows([0])


def test_predict_and_evaluate_decode_with_a_beam_from_the_cli(tiny_speech, tmp_path, capsys):
    from mtransfer.cli import main

    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    with torch.no_grad():
        model.head.out.weight.mul_(20)
    model.save_pretrained(tmp_path / "m")
    csv = _wav_csv(tmp_path / "d")
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(csv), "--beam-width", "1"]) == 0
    beam = [json.loads(x)["transcript"] for x in capsys.readouterr().out.splitlines()]
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(csv)]) == 0
    greedy = [json.loads(x)["transcript"] for x in capsys.readouterr().out.splitlines()]
    assert len(beam) == len(TEXTS) and beam == [" ".join(g.split()) for g in greedy]
    assert main(["evaluate", "--model-dir", str(tmp_path / "m"), "--data", str(csv),
                 "--label-column", "text", "--beam-width", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["decoder"] == "beam" and out["beam_width"] == 4 and 0 <= out["eval_cer"] and out["eval_samples"] == len(TEXTS)
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(csv),
                 "--lm", str(tmp_path / "missing.arpa")]) == 2
    assert "missing.arpa: no such KenLM file" in capsys.readouterr().err


def test_cli_evaluate_encodes_transcripts_with_the_models_own_vocabulary(tiny_speech, tmp_path, capsys):
    """On the earlier main, evaluate on a CTC model stopped with "eval_dataset has labels [...] but the model was built
    for [...]" whenever the data held a subset of the model's characters, even the run's own validation set."""
    from mtransfer.cli import main

    data = ctc_data()
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.vocabulary, task="ctc", seed=0)
    model.save_pretrained(tmp_path / "m")
    subset = _wav_csv(tmp_path / "subset", texts=["ab ba", "ba", "a ab"])  # no 'c'
    assert main(["evaluate", "--model-dir", str(tmp_path / "m"), "--data", str(subset), "--label-column", "text"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["eval_samples"] == 3 and out["unknown_units"] == 0
    expected = mt.Trainer(model, mt.TrainingArguments(output_dir=str(tmp_path / "e"), report_to=[], progress_bar=False),
                          eval_dataset=mt.load_labeled(str(subset), input_column="audio", label_column="text", task="ctc",
                                                       vocabulary=model.vocabulary)).evaluate()
    assert out["eval_cer"] == pytest.approx(expected["eval_cer"])
    unknown = _wav_csv(tmp_path / "unknown", texts=["ab z", "zz"])  # 'z' is not in the model's vocabulary: [UNK]
    assert main(["evaluate", "--model-dir", str(tmp_path / "m"), "--data", str(unknown), "--label-column", "text"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["unknown_units"] == 3
