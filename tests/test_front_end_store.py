"""The speech front end on disk: a file's filterbank (or normalised waveform) is computed once for every run and
process, keyed by the file's content and the extractor's settings."""

import logging
import shutil

import pytest
import torch

import mtransfer as mt
from mtransfer.adapters import AudioAdapter
from mtransfer.adapters import audio as audio_module
from mtransfer.cache import FrontEndStore
from mtransfer.record import RunRecord
from tests.test_media import write_wav
from tests.test_speech import TEXTS
from tests.tiny import tone


@pytest.fixture()
def fresh(monkeypatch, tmp_path):
    """A new process's state: an empty memo and sample counts, a store in ``tmp_path/store``; returns a function
    that starts another "process" on the same store."""

    def start():
        store = FrontEndStore(tmp_path / "store")
        monkeypatch.setattr(audio_module, "FRONT_END_STORE", store)
        monkeypatch.setattr(audio_module, "FRONT_END_MEMO", audio_module.FrontEndMemo())
        monkeypatch.setattr(audio_module, "SAMPLE_COUNTS", {})
        return store

    return start


def count_extractions(monkeypatch, adapter):
    calls = []
    real = type(adapter.feature_extractor).__call__
    monkeypatch.setattr(type(adapter.feature_extractor), "__call__",
                        lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    return calls


def wav_file(path, seconds=0.7, freqs=(300.0, 700.0)):
    write_wav(path, tone(seconds, 16000, freqs)[0].numpy(), 16000)
    return str(path)


def test_a_new_process_reads_the_filterbank_of_a_file_it_never_saw(tiny_speech, tmp_path, monkeypatch, fresh):
    store = fresh()
    path = wav_file(tmp_path / "a.wav")
    adapter = AudioAdapter(tiny_speech("w2v-bert"))
    calls = count_extractions(monkeypatch, adapter)
    first = adapter.preprocess([path], training=True)
    assert len(calls) == 1 and store.writes == 1
    store = fresh()  # another process: empty memo, the same disk
    loaded = []
    real_load = adapter.load
    monkeypatch.setattr(adapter, "load", lambda item: (loaded.append(item), real_load(item))[1])
    second = adapter.preprocess([path], training=True)
    assert len(calls) == 1 and store.hits == 1 and loaded == []  # neither decoded nor transformed
    for key in ("input_features", "attention_mask", "lengths"):
        assert torch.equal(first[key], second[key]), key
    assert adapter.num_samples(path) == 11200 and loaded == []  # the checks before training read the count too
    # keyed by content: a copy elsewhere is found; an edit in place is not
    copy = shutil.copy(path, tmp_path / "copy.wav")
    adapter.preprocess([copy])
    assert len(calls) == 1
    wav_file(tmp_path / "a.wav", freqs=(400.0, 900.0))
    third = adapter.preprocess([path], training=True)
    assert len(calls) == 2 and not torch.equal(third["input_features"], first["input_features"])
    assert len(list((tmp_path / "store").rglob("*.safetensors"))) == 2


def test_other_extractor_settings_have_their_own_entries(tiny_speech, tmp_path, fresh):
    store = fresh()
    path = wav_file(tmp_path / "a.wav")
    AudioAdapter(tiny_speech("w2v-bert")).preprocess([path])
    AudioAdapter(tiny_speech("wav2vec2")).preprocess([path])  # a normalised waveform, not a filterbank
    kinds = sorted(p.parent.parent.name for p in (tmp_path / "store").rglob("*.safetensors"))
    assert len(set(kinds)) == 2 and store.writes == 2
    described = [(p / "extractor.json").read_text() for p in (tmp_path / "store").iterdir()]
    assert any("SeamlessM4TFeatureExtractor" in d for d in described)
    assert any("Wav2Vec2FeatureExtractor" in d for d in described)


def test_an_entry_that_does_not_read_back_is_computed_again_and_rewritten(tiny_speech, tmp_path, monkeypatch, fresh,
                                                                         caplog):
    fresh()
    path = wav_file(tmp_path / "a.wav")
    adapter = AudioAdapter(tiny_speech("w2v-bert"))
    first = adapter.preprocess([path])
    (entry,) = (tmp_path / "store").rglob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk
    store = fresh()
    calls = count_extractions(monkeypatch, adapter)
    with caplog.at_level(logging.WARNING, logger="mtransfer.cache"):
        again = adapter.preprocess([path])
    assert len(calls) == 1 and "does not read back" in caplog.text and store.writes == 1
    assert torch.equal(first["input_features"], again["input_features"])
    assert not list((tmp_path / "store").rglob("*.tmp"))  # nothing half-written left behind
    fresh()
    assert torch.equal(adapter.preprocess([path])["input_features"], first["input_features"])


def test_a_whole_clip_stored_by_one_adapter_is_still_cropped_by_another_with_a_shorter_limit(tiny_speech, tmp_path,
                                                                                             fresh):
    fresh()
    path = wav_file(tmp_path / "long.wav", seconds=2.0)
    AudioAdapter(tiny_speech("wav2vec2")).preprocess([path], training=True)  # max_duration 10 s: kept whole
    short = AudioAdapter(tiny_speech("wav2vec2"), max_duration=1.0)
    batch = short.preprocess([path], training=True)
    assert int(batch["lengths"][0]) == 16000


def test_a_ctc_run_on_the_stored_front_end_trains_exactly_as_one_that_computes_it(tiny_speech, tmp_path, fresh):
    paths = [wav_file(tmp_path / f"{i}.wav", seconds=0.6 + 0.15 * i, freqs=(200.0 + 97 * i, 1100.0 - 31 * i))
             for i in range(len(TEXTS))]
    train = mt.load_labeled([{"audio": p, "text": t} for p, t in zip(paths, TEXTS)], input_column="audio",
                            label_column="text", task="ctc")
    histories = []
    for name in ("cold", "warm", "off"):
        store = fresh()
        store.enabled = name != "off"
        model = mt.TransferModel.from_backbone("audio", tiny_speech("w2v-bert"), labels=train.vocabulary, task="ctc",
                                               seed=0)
        args = mt.TrainingArguments(output_dir=str(tmp_path / name), num_epochs=2, batch_size=3, seed=0, report_to=[],
                                    plot=False, progress_bar=False, save_checkpoints="none", show_transcripts=False,
                                    learning_rate=3e-3)
        result = mt.Trainer(model, args, train, train).train()
        histories.append([(h["train_loss"], h["eval_loss"], h["eval_cer"]) for h in result.history])
        assert (store.hits, store.writes) == {"cold": (0, 6), "warm": (6, 0), "off": (0, 0)}[name], name
        assert RunRecord.load(result.metrics_path).batching["group_by_length"] is True
    assert histories[0] == histories[1] == histories[2]
