import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import mtransfer as mt
from mtransfer.adapters.text import TextAdapter
from mtransfer.cache import FeatureCache
from mtransfer.linear import fit_linear_probe
from tests.test_multiprocess import free_port
from tests.tiny import extraction_texts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def texts():
    return extraction_texts()


def reference(adapter, texts):
    adapter.eval()
    with torch.no_grad():
        return adapter.forward_features(adapter.preprocess(texts)).pooled


def test_features_equal_a_direct_forward_and_are_memory_mapped(tiny_bert, texts, tmp_path):
    adapter = TextAdapter(tiny_bert)
    entry = FeatureCache(tmp_path, shard_size=16).features(adapter, texts, batch_size=7)
    assert (entry.num_rows, entry.dim) == (50, 32)
    assert torch.allclose(entry.all(), reference(adapter, texts), atol=1e-6)
    assert torch.equal(entry.rows([49, 0, 17]), entry.all()[[49, 0, 17]])
    assert isinstance(entry._shard(0), np.memmap)
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["complete"] and meta["num_shards"] == 4


def perturbed(tiny_bert, tmp_path):
    folder = tmp_path / "perturbed"
    shutil.copytree(tiny_bert, folder)
    adapter = TextAdapter(folder)
    with torch.no_grad():
        adapter.backbone.encoder.layer[1].output.dense.bias.add_(1e-3)
    return adapter


def other_tokenizer(tiny_bert, tmp_path):
    from transformers import BertTokenizer

    folder = tmp_path / "cased"
    shutil.copytree(tiny_bert, folder)
    tok = BertTokenizer(vocab=TextAdapter(tiny_bert).tokenizer.get_vocab(), do_lower_case=False)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / f).unlink(missing_ok=True)
    tok.save_pretrained(folder)
    return TextAdapter(folder)


CHANGES = {
    "backbone weights": lambda b, t, p: (perturbed(b, p), t, {}),
    "max_length": lambda b, t, p: (TextAdapter(b, max_length=6), t, {}),
    "pooling": lambda b, t, p: (TextAdapter(b, pooling="cls"), t, {}),
    "tokenizer": lambda b, t, p: (other_tokenizer(b, p), t, {}),
    "dataset": lambda b, t, p: (TextAdapter(b), t[:-1] + ["bread"], {}),
    "view": lambda b, t, p: (TextAdapter(b), t, {"view": 1}),
}


@pytest.mark.parametrize("component", list(CHANGES))
def test_each_key_component_change_misses_and_keeping_it_hits(component, tiny_bert, texts, tmp_path):
    cache = FeatureCache(tmp_path / "cache", shard_size=16)
    base = cache.features(TextAdapter(tiny_bert), texts)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.features(TextAdapter(tiny_bert), list(texts)).path == base.path  # a fresh load of the same model
    assert (cache.hits, cache.misses) == (1, 1)
    adapter, changed_texts, kwargs = CHANGES[component](tiny_bert, texts, tmp_path)
    other = cache.features(adapter, changed_texts, **kwargs)
    assert other.path != base.path and (cache.hits, cache.misses) == (1, 2)
    cache.features(adapter, changed_texts, **kwargs)
    assert (cache.hits, cache.misses) == (2, 2)


def test_interrupted_extraction_resumes_and_equals_an_uninterrupted_one(tiny_bert, texts, tmp_path):
    adapter = TextAdapter(tiny_bert)
    cache = FeatureCache(tmp_path / "a", shard_size=8)  # 7 shards

    def stop_after_three(shard):
        if shard == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.features(adapter, texts, on_shard=stop_after_three)
    key = cache.key(adapter, texts)
    assert cache.lookup(key) is None  # not complete: never served
    path = cache.entry_path(key)
    assert sorted(p.name for p in path.iterdir()) == [f"shard_0000{i}.safetensors" for i in range(3)]
    done = []
    resumed = cache.features(adapter, texts, on_shard=done.append)
    assert done == [3, 4, 5, 6]  # only the missing shards
    fresh = FeatureCache(tmp_path / "b", shard_size=8).features(adapter, texts)
    assert torch.equal(resumed.all(), fresh.all())


def test_two_concurrent_writers_do_not_corrupt(tiny_bert, texts, tmp_path):
    results, errors = [], []

    def work():
        try:
            results.append(FeatureCache(tmp_path, shard_size=4).features(TextAdapter(tiny_bert), texts).all())
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert torch.equal(results[0], results[1])
    assert torch.allclose(results[0], reference(TextAdapter(tiny_bert), texts), atol=1e-6)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_float16_storage(tiny_bert, texts, tmp_path):
    adapter = TextAdapter(tiny_bert)
    entry = FeatureCache(tmp_path, dtype="float16").features(adapter, texts)
    assert torch.allclose(entry.all(), reference(adapter, texts), atol=2e-3)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_extraction_equals_one_process(tiny_bert, texts, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / "tests/launch_extract.py"), str(tiny_bert),
           str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = [(tmp_path / "two" / f"written{i}.txt").read_text() for i in range(2)]
    assert written == ["0,2,4,6", "1,3,5"]  # each process extracted its own shards
    one = FeatureCache(tmp_path / "one", shard_size=8).features(TextAdapter(tiny_bert), texts, batch_size=5)
    two = FeatureCache(tmp_path / "two", shard_size=8).lookup(FeatureCache(tmp_path / "two", shard_size=8)
                                                               .key(TextAdapter(tiny_bert), texts))
    assert two is not None
    assert torch.allclose(one.all(), two.all(), atol=1e-6)


def count_backbone_calls(model):
    calls = {"n": 0}
    original = model.adapter.forward_features

    def counting(batch):
        calls["n"] += 1
        return original(batch)

    model.adapter.forward_features = counting
    return calls


def test_frozen_training_reads_the_cache_no_backbone_pass_per_epoch(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)

    def run(cache_features, out):
        model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
        calls = count_backbone_calls(model)
        args = mt.TrainingArguments(output_dir=str(tmp_path / out), strategy="frozen", num_epochs=4, learning_rate=1e-2,
                                    batch_size=16, eval_batch_size=64, progress_bar=False, report_to=[], plot=False,
                                    save_checkpoints=False, cache_features=cache_features, cache_dir=str(tmp_path / "c"))
        trainer = mt.Trainer(model, args, train, val)
        res = trainer.train()
        return calls["n"], res, trainer

    cached_calls, cached, trainer = run(True, "cached")
    # one extraction pass (3 batches of 64 over 144 rows, 1 over 63); every evaluation reads the cache too
    assert cached_calls == 3 + 1
    uncached_calls, uncached, _ = run(False, "raw")
    assert uncached_calls == 4 * (9 + 1) + 1
    # same training either way: cached features are the frozen backbone's eval-mode features
    for a, b in zip(cached.history, uncached.history):
        assert a["eval_accuracy"] == b["eval_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # a second run hits the cache: no extraction at all
    again_calls, _, trainer2 = run(True, "again")
    assert again_calls == 0 and trainer2.feature_cache.hits == 2 and trainer2.feature_cache.misses == 0


def test_two_stage_head_stage_is_cached_then_backbone_trains(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    calls = count_backbone_calls(model)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="two_stage", num_epochs=3, head_epochs=2,
                                learning_rate=1e-3, batch_size=16, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=False, cache_dir=str(tmp_path / "c"))
    mt.Trainer(model, args, train).train()
    assert calls["n"] == 3 + 9  # extraction (3 batches), then 1 fine-tuning epoch of 9 batches


def test_linear_probe_as_head_then_fine_tune(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    cache = FeatureCache(tmp_path / "c")
    probe, metrics = fit_linear_probe(model, train, val, kind="logistic", cache=cache, cv=3)
    feats = cache.features(model.adapter, val.inputs).all()
    sk = probe.estimator.predict(feats.numpy())
    assert [train.label_names.index(p) for p in model.predict(val.inputs)] == sk.tolist()
    assert metrics["eval_accuracy"] == pytest.approx((sk == val.targets.numpy()).mean())
    model.save_pretrained(tmp_path / "m")
    loaded = mt.TransferModel.from_pretrained(tmp_path / "m")
    assert loaded.predict(val.inputs) == model.predict(val.inputs)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "ft"), strategy="full", num_epochs=1, learning_rate=1e-3,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    res = mt.Trainer(model, args, train, val).train()
    assert res.history[0]["eval_samples"] == 63


def test_augmented_views_are_cached_separately(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="frozen", num_epochs=3, learning_rate=1e-3,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                cache_dir=str(tmp_path / "c"), augmented_views=2)
    trainer = mt.Trainer(model, args, train)
    trainer.train()
    assert trainer.feature_cache.misses == 2  # views 1 and 2, each extracted once, reused in epoch 3
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 2


def test_evaluate_after_a_frozen_run_reads_the_cache(tiny_bert, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    test = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy="frozen", num_epochs=2, learning_rate=1e-2,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False,
                                cache_dir=str(tmp_path / "c"))
    trainer = mt.Trainer(model, args, train)
    trainer.train()
    calls = count_backbone_calls(model)
    cached = trainer.evaluate(test)
    assert calls["n"] == 1 and trainer.feature_cache.misses == 2  # test features extracted once (1 batch)...
    trainer.evaluate(test)
    assert calls["n"] == 1 and trainer.feature_cache.hits == 1  # ... and read back the second time
    preds = model.predict(test.inputs)
    accuracy = sum(train.label_names[int(t)] == p for t, p in zip(test.targets, preds)) / len(preds)
    assert cached["eval_accuracy"] == pytest.approx(accuracy)


def test_array_inputs_are_keyed_by_shape_and_dtype_too():
    """The same bytes as another shape or dtype are other inputs (the key used to hash bytes only)."""
    from mtransfer.media import media_fingerprint

    a = np.arange(12, dtype=np.float32)
    variants = [a, a.reshape(3, 4), a.view(np.int32), torch.from_numpy(a), torch.from_numpy(a.reshape(4, 3)),
                (a, 16000), (a.reshape(2, 6), 16000), {"array": a, "sampling_rate": 16000},
                {"array": a.reshape(6, 2), "sampling_rate": 16000}]
    keys = [media_fingerprint([v]) for v in variants]
    assert len(set(keys[:3])) == 3 and keys[3] == keys[0] and keys[4] != keys[3]
    assert keys[5] != keys[6] and keys[7] != keys[8]


def test_an_augmented_view_restores_every_random_generator(tiny_bert, texts, tmp_path):
    """Extraction seeds torch per shard; the caller's CPU (and, on a GPU, CUDA) generators continue as before."""
    cache = FeatureCache(tmp_path / "cache", shard_size=16)
    torch.manual_seed(123)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(123)
    cpu_before = torch.random.get_rng_state()
    cuda_before = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    cache.features(TextAdapter(tiny_bert), texts, view=1, seed=7)
    assert torch.equal(torch.random.get_rng_state(), cpu_before)
    if cuda_before is not None:
        assert torch.equal(torch.cuda.get_rng_state(), cuda_before)


def test_a_truncated_cache_shard_is_extracted_again_not_failed_on_every_rerun(tiny_bert, texts, tmp_path, caplog):
    """On the earlier main, a truncated shard failed the same way on every rerun."""
    cache = FeatureCache(tmp_path / "cache", shard_size=16)
    entry = cache.features(TextAdapter(tiny_bert), texts)
    expected = entry.all()
    shard = entry.path / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"shard_00001.safetensors: not a readable safetensors file \(truncated"):
        type(entry)(entry.path, entry.num_rows, entry.dim, entry.shard_size).all()  # a reader names the file
    written = []
    again = cache.features(TextAdapter(tiny_bert), texts, on_shard=written.append)
    assert written == [1]  # the damaged shard alone
    assert torch.equal(again.all(), expected)
    assert f"feature cache {entry.path}: shard 1 is damaged; extracting it again" in caplog.text


def test_a_damaged_cache_record_is_one_line_naming_it(tiny_bert, texts, tmp_path):
    cache = FeatureCache(tmp_path / "cache", shard_size=16)
    entry = cache.features(TextAdapter(tiny_bert), texts)
    (entry.path / "meta.json").write_text('{"key": ')
    with pytest.raises(ValueError) as err:
        cache.features(TextAdapter(tiny_bert), texts)
    assert str(err.value).startswith(f"{entry.path / 'meta.json'}: not a readable feature-cache record (")
    assert str(err.value).endswith(f"the cache entry is damaged: delete {entry.path} and rerun (its features are "
                                   "extracted again).")


def test_cache_shards_follow_the_umask(tiny_bert, texts, tmp_path):
    """On the earlier main, shards were written 0600 under umask 022 (every other output follows the umask)."""
    old = os.umask(0o022)
    try:
        entry = FeatureCache(tmp_path / "cache", shard_size=16).features(TextAdapter(tiny_bert), texts)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in entry.path.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def _extract_in_a_process(bert: str, root: str, log: str) -> None:
    """Run in a spawned process: extract the shared entry, recording each shard this process wrote."""
    from mtransfer.adapters.text import TextAdapter as Text

    import time

    written: list[int] = []

    def slowly(shard: int) -> None:  # extraction long enough for the two processes to overlap
        written.append(shard)
        time.sleep(0.5)

    FeatureCache(root, shard_size=8).features(Text(bert), extraction_texts(), batch_size=5, on_shard=slowly)
    Path(log).write_text(",".join(map(str, written)))


def test_a_second_process_extracting_the_same_entry_waits_and_reads_the_first_ones_shards(tiny_bert, tmp_path):
    """On the earlier main, two processes extracting one entry both did the whole work (168 s each on a real corpus)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_extract_in_a_process, args=(str(tiny_bert), str(tmp_path / "cache"),
                                                             str(tmp_path / f"written{i}.txt"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    written = sorted((tmp_path / f"written{i}.txt").read_text() for i in range(2))
    assert written == ["", "0,1,2,3,4,5,6"]  # one process wrote every shard, the other none
    alone = FeatureCache(tmp_path / "alone", shard_size=8).features(TextAdapter(tiny_bert), extraction_texts(), batch_size=5)
    shared = FeatureCache(tmp_path / "cache", shard_size=8).features(TextAdapter(tiny_bert), extraction_texts())
    assert torch.equal(shared.all(), alone.all())
