import shutil

import numpy as np
import pytest
import torch

import mtransfer as mt
from mtransfer.adapters import AudioAdapter
from tests.strategy_checks import train_and_reload
from tests.test_media import write_wav
from tests.tiny import tone

STRATEGIES = ["frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw", "contrastive"]


def pitch_rows(n_per_class: int, seed: int):
    """Two classes of short clips: low (150-300 Hz) or high (900-1800 Hz) tones, random rates and lengths."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, (lo, hi) in (("low", (150, 300)), ("high", (900, 1800))):
        for _ in range(n_per_class):
            rate = int(rng.choice([8000, 16000, 22050]))
            freqs = tuple(float(f) for f in rng.uniform(lo, hi, 2))
            rows.append({"audio": (tone(float(rng.uniform(0.4, 1.2)), rate, freqs)[0].numpy(), rate), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def pitches():
    train = mt.load_labeled(pitch_rows(12, 0), input_column="audio")
    return train, mt.load_labeled(pitch_rows(4, 1), input_column="audio", label_names=train.label_names)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ["wav2vec2", "hubert", "w2v-bert"])
def test_every_strategy_trains_and_reloads(arch, strategy, tiny_speech, pitches, tmp_path):
    train, val = pitches
    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=train.label_names, seed=0)
    train_and_reload(model, train, val, strategy, tmp_path, val.inputs[:4])


def test_layer_groups_keep_the_feature_encoder_frozen(tiny_speech):
    adapter = AudioAdapter(tiny_speech("wav2vec2"))
    assert [g.name for g in adapter.layer_groups()] == ["feature_projection", "layer.0", "layer.1", "top"]
    cnn = adapter.unused_parameters()
    assert cnn and all(not p.requires_grad for p in cnn)
    assert {id(p) for p in cnn} == {id(p) for p in adapter.backbone.feature_extractor.parameters()}
    open_cnn = AudioAdapter(tiny_speech("wav2vec2"), freeze_feature_encoder=False)
    assert [g.name for g in open_cnn.layer_groups()][0] == "feature_encoder" and not open_cnn.unused_parameters()
    grouped = [id(p) for g in open_cnn.layer_groups() for p in g.parameters()]
    assert sorted(grouped) == sorted(id(p) for p in open_cnn.backbone.parameters())


def test_same_signal_at_any_rate_and_channel_count_gives_the_same_features(tiny_speech):
    adapter = AudioAdapter(tiny_speech("wav2vec2")).eval()
    inputs = [(tone(1.0, 8000, channels=2), 8000), (tone(1.0, 16000)[0].numpy(), 16000), (tone(1.0, 44100)[0], 44100)]
    with torch.no_grad():
        feats = [adapter.forward_features(adapter.preprocess([x])) for x in inputs]
    assert {f.tokens.shape for f in feats} == {(1, 49, 32)}
    ref = feats[1]
    for f in (feats[0], feats[2]):
        assert torch.allclose(f.tokens, ref.tokens, atol=0.02 * float(ref.tokens.abs().max()))
        assert torch.allclose(f.pooled, ref.pooled, atol=0.01 * float(ref.pooled.abs().max()))


def test_padding_is_masked_so_batching_does_not_change_features(tiny_speech):
    adapter = AudioAdapter(tiny_speech("hubert")).eval()
    clips = [(tone(s, 16000)[0], 16000) for s in (1.0, 0.3, 0.62)]
    with torch.no_grad():
        batch = adapter.preprocess(clips)
        together = adapter.forward_features(batch)
        assert batch["input_values"].shape == (3, 16000) and batch["attention_mask"].sum(1).tolist() == [16000, 4800, 9920]
        assert together.mask.sum(1).tolist() == [49, 14, 30]
        for i, clip in enumerate(clips):
            alone = adapter.forward_features(adapter.preprocess([clip])).pooled[0]
            assert torch.allclose(together.pooled[i], alone, atol=1e-5)


def test_max_duration_crops_in_training_and_chunks_at_evaluation(tiny_speech):
    folder = tiny_speech("wav2vec2")
    long = (tone(3.3, 16000)[0], 16000)
    adapter = AudioAdapter(folder, max_duration=1.0)
    assert adapter.preprocess([long], training=True)["input_values"].shape == (1, 16000)
    torch.manual_seed(0)
    a = adapter.preprocess([long], training=True)["input_values"]
    torch.manual_seed(1)
    b = adapter.preprocess([long], training=True)["input_values"]
    assert not torch.equal(a, b)  # a random crop
    assert adapter.preprocess([long])["input_values"].shape == (1, 52800)  # full length at evaluation
    chunked = AudioAdapter(folder, max_duration=1.0, eval_chunking=True).eval()
    batch = chunked.preprocess([long, (tone(0.5, 16000)[0], 16000)])
    # 3.3 s -> chunks of 1, 1 and 1.3 s (a tail under 0.5 s joins the last chunk); 0.5 s stays whole
    assert batch["chunk_owner"].tolist() == [0, 0, 0, 1] and batch["attention_mask"].sum(1).tolist() == [16000, 16000, 20800, 8000]
    with torch.no_grad():
        feats = chunked.forward_features(batch)
        assert feats.pooled.shape == (2, 32) and feats.tokens is None
        pieces = [chunked.forward_features(chunked.preprocess([(w, 16000)])) for w in (long[0][:16000], long[0][16000:32000], long[0][32000:])]
    frames = torch.tensor([float(p.mask.sum()) for p in pieces])
    expected = sum(p.pooled[0] * n for p, n in zip(pieces, frames)) / frames.sum()
    assert torch.allclose(feats.pooled[0], expected, atol=1e-5)


def test_stats_pooling_and_layer_weighting(tiny_speech, pitches, tmp_path):
    folder = tiny_speech("wav2vec2")
    stats = AudioAdapter(folder, pooling="stats").eval()
    assert stats.embedding_dim == 64
    with torch.no_grad():
        f = stats.forward_features(stats.preprocess([(tone(1.0, 16000)[0], 16000)]))
    assert torch.allclose(f.pooled[0, :32], f.tokens[0].mean(0), atol=1e-5)
    assert torch.allclose(f.pooled[0, 32:], f.tokens[0].std(0, unbiased=False), atol=1e-4)
    train, val = pitches
    model = mt.TransferModel.from_backbone("audio", folder, labels=train.label_names, seed=0, layer_weighting=True)
    assert model.adapter.head_modules() == [model.adapter.layer_weights]
    before = model.adapter.layer_weights.weights.detach().clone()
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="frozen", num_epochs=2, learning_rate=1e-2,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    trainer = mt.Trainer(model, args, train, val)
    trainer.train()
    assert not torch.equal(model.adapter.layer_weights.weights, before)  # trained with the head ...
    assert trainer.feature_cache is None or trainer.feature_cache.misses == 0  # ... so no cached features
    model.save_pretrained(tmp_path / "m")
    loaded = mt.TransferModel.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.adapter.layer_weights.weights, model.adapter.layer_weights.weights)


def test_bad_audio_files_stop_training_and_can_be_skipped(tiny_speech, tmp_path):
    rows = []
    for i in range(6):
        write_wav(tmp_path / f"{i}.wav", tone(0.5, 16000, (200.0 + 300 * (i % 2),))[0].numpy(), 16000)
        rows.append({"audio": str(tmp_path / f"{i}.wav"), "label": "ab"[i % 2]})
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + b"\x00" * 30)
    shutil.copy(tmp_path / "0.wav", tmp_path / "odd.xyz")
    (tmp_path / "odd.xyz").write_bytes(b"")
    rows += [{"audio": str(tmp_path / "bad.flac"), "label": "a"}, {"audio": str(tmp_path / "odd.xyz"), "label": "b"}]
    data = mt.load_labeled(rows, input_column="audio")
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=data.label_names, seed=0)
    args = dict(output_dir=str(tmp_path / "run"), strategy="frozen", num_epochs=1, progress_bar=False, report_to=[], plot=False)
    with pytest.raises(ValueError) as err:
        mt.Trainer(model, mt.TrainingArguments(**args), data)
    assert "2 of 8 inputs cannot be read" in str(err.value)
    assert "bad.flac: cannot decode the audio" in str(err.value) and "odd.xyz: the file is empty" in str(err.value)
    trainer = mt.Trainer(model, mt.TrainingArguments(**args, skip_bad_inputs=True), data)
    assert trainer.skipped_inputs == {"train_dataset": [6, 7]}
    trainer.train()


def test_espeak_corpus_language_id_with_a_tiny_wav2vec2(tiny_speech, tmp_path):
    """The speech corpus builder -> audiofolder -> datasets -> language ID, tested on a held-out pseudo-speaker."""
    import datasets

    from mtransfer.builtins.speech_corpus import build_speech_corpus

    root = build_speech_corpus(tmp_path / "corpus", ["de", "ru", "bn"], per_language=48, speakers=4, workers=2)
    ds = datasets.load_dataset("audiofolder", data_dir=str(root), split="train")
    assert set(ds.column_names) >= {"audio", "transcript", "language", "speaker", "split"} and len(ds) == 144
    train_ds = ds.filter(lambda s: s == "train", input_columns="split")
    test_ds = ds.filter(lambda s: s == "test", input_columns="split")
    assert not set(train_ds["speaker"]) & set(test_ds["speaker"])
    train = mt.load_labeled(train_ds, input_column="audio", label_column="language")
    test = mt.load_labeled(test_ds, input_column="audio", label_column="language", label_names=train.label_names)
    model = mt.TransferModel.from_backbone("audio", tiny_speech("wav2vec2"), labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="frozen", num_epochs=20, learning_rate=3e-3,
                                batch_size=16, progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    result = mt.Trainer(model, args, train, test).train()
    assert result.final_metrics["eval_accuracy"] >= 0.5, result  # chance is 1/3; random-weight features still carry language cues


def test_a_long_clip_in_an_evaluation_batch_warns_with_the_memory_figure(tiny_speech, caplog):
    """One 10-minute clip used to ask for a multi-GB attention mask silently (chunking is off by default)."""
    import logging

    adapter = AudioAdapter(tiny_speech("wav2vec2"))
    samples = 600 * adapter.sampling_rate
    need = adapter.attention_bytes(1, samples)
    frames = int(adapter.backbone._get_feat_extract_output_lengths(torch.tensor(samples)))
    assert need == 4 * adapter.backbone.config.num_attention_heads * frames**2 and need > 2**30
    with caplog.at_level(logging.WARNING, logger="mtransfer.adapters.audio"):
        adapter.preprocess([(np.zeros(samples, dtype=np.float32), adapter.sampling_rate)])
        adapter.preprocess([(np.zeros(samples, dtype=np.float32), adapter.sampling_rate)])  # warned once per size
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and f"about {need / 1e9:.1f} GB per attention layer" in warnings[0]
    assert "eval_chunking=True" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtransfer.adapters.audio"):
        adapter.preprocess([(np.zeros(16000, dtype=np.float32), adapter.sampling_rate)])
    assert not caplog.records


def test_the_front_end_of_a_file_is_computed_once_and_redone_when_the_file_changes(tiny_speech, tmp_path, monkeypatch):
    from mtransfer.adapters import audio as audio_module

    monkeypatch.setattr(audio_module, "FRONT_END_MEMO", audio_module.FrontEndMemo())
    wave, rate = tone(0.7, 16000, (300.0, 700.0))[0], 16000
    path = tmp_path / "a.wav"
    write_wav(path, wave.numpy(), rate)
    adapter, other = AudioAdapter(tiny_speech("w2v-bert")), AudioAdapter(tiny_speech("w2v-bert"))
    calls = []
    real = type(adapter.feature_extractor).__call__
    monkeypatch.setattr(type(adapter.feature_extractor), "__call__", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    first = adapter.preprocess([str(path), (wave.numpy(), rate)], training=True)
    assert len(calls) == 2
    second = adapter.preprocess([str(path), (wave.numpy(), rate)], training=True)
    assert len(calls) == 3  # the file's filterbank came from the memo; the array (no file to key on) is redone
    for key in ("input_features", "attention_mask", "lengths"):
        assert torch.equal(first[key], second[key]), key
    # another adapter on the same extractor settings shares the memo (a matrix builds one model per run)
    other.preprocess([str(path)])
    assert len(calls) == 3
    # a rewritten file (new size and time) is read again
    longer = tone(0.9, 16000, (300.0, 700.0))[0]
    write_wav(path, longer.numpy(), rate)
    third = adapter.preprocess([str(path)])
    assert len(calls) == 4 and int(third["lengths"][0]) > int(first["lengths"][0])
    assert (audio_module.FRONT_END_MEMO.hits, audio_module.FRONT_END_MEMO.misses) == (2, 2)


def test_a_file_is_decoded_once_for_the_checks_before_training_and_again_when_it_changes(tiny_speech, tmp_path,
                                                                                           monkeypatch):
    from mtransfer.adapters import audio as audio_module
    from mtransfer.speech.data import check_transcript_lengths

    monkeypatch.setattr(audio_module, "SAMPLE_COUNTS", {})
    path = tmp_path / "a.wav"
    write_wav(path, tone(0.7, 8000, (300.0,))[0].numpy(), 8000)
    adapter = AudioAdapter(tiny_speech("w2v-bert"))
    decoded = []
    real = adapter.load
    monkeypatch.setattr(adapter, "load", lambda item: (decoded.append(item), real(item))[1])
    assert adapter.num_samples(str(path)) == 11200  # 0.7 s resampled to 16 kHz
    ds = mt.load_labeled([{"audio": str(path), "transcript": "ab"}], input_column="audio", label_column="transcript",
                         task="ctc")
    assert adapter.find_bad_inputs([str(path)] * 3) == []
    check_transcript_lengths(adapter, ds, "train")
    assert len(decoded) == 1
    write_wav(path, tone(0.3, 8000, (300.0,))[0].numpy(), 8000)  # rewritten: decoded again
    assert adapter.num_samples(str(path)) == 4800 and len(decoded) == 2
    path.write_bytes(b"not audio at all, but the same path")
    assert "cannot decode" in adapter.find_bad_inputs([str(path)])[0][1]


def test_filterbank_frames_follow_the_extractor_at_every_length(tiny_speech):
    from transformers import SeamlessM4TFeatureExtractor

    adapter = AudioAdapter(tiny_speech("w2v-bert"))
    assert adapter._frames_rule is not None  # the closed form agreed with the extractor
    for stride in (2, 4):
        adapter.feature_extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000,
                                                                stride=stride, padding_value=1.0)
        rule = adapter._arithmetic_frames_rule()
        for n in [*range(0, 2400, 37), 16000, 16001, 47999, 48123]:
            assert rule(n) == adapter._count_feature_frames(n), (stride, n)
