import pytest
import torch

import mtransfer as mt
from mtransfer.adapters.sentence import SentenceTransformerAdapter
from mtransfer.cache import FeatureCache
from tests.tiny import extraction_texts


def test_features_equal_sentence_transformers_encode(tiny_sentence):
    from sentence_transformers import SentenceTransformer

    adapter = SentenceTransformerAdapter(tiny_sentence).eval()
    texts = extraction_texts(10)
    ours = adapter.forward_features(adapter.preprocess(texts)).pooled
    theirs = SentenceTransformer(str(tiny_sentence), device="cpu").encode(texts, convert_to_tensor=True)
    assert adapter.embedding_dim == 16
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(ours.norm(dim=1), torch.ones(10), atol=1e-5)  # its Normalize module ran


def test_layer_groups_include_the_dense_top(tiny_sentence):
    adapter = SentenceTransformerAdapter(tiny_sentence)
    groups = adapter.layer_groups()
    assert [g.name for g in groups] == ["embeddings", "layer.0", "layer.1", "top"]
    grouped = {id(p) for g in groups for p in g.parameters()}
    unused = {id(p) for p in adapter.unused_parameters()}
    assert grouped | unused == {id(p) for p in adapter.backbone.parameters()}
    dense = adapter.backbone[2]
    assert {id(p) for p in dense.parameters()} <= {id(p) for p in groups[-1].parameters()}


@pytest.mark.parametrize("strategy", ["frozen", "gradual_unfreezing"])
def test_trains_saves_and_loads(strategy, tiny_sentence, topic_data, tmp_path):
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("sentence", tiny_sentence, labels=train.label_names, seed=0, max_length=20)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "o"), strategy=strategy, num_epochs=3, learning_rate=5e-3,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    res = mt.Trainer(model, args, train, val).train()
    assert res.history[-1]["eval_samples"] == 63
    loaded = mt.TransferModel.from_pretrained(res.model_dir)
    assert loaded.adapter.max_length == 20
    assert torch.equal(loaded.predict_outputs(val.inputs), model.predict_outputs(val.inputs))


def test_cache_key_covers_the_sentence_modules(tiny_sentence, tmp_path):
    cache = FeatureCache(tmp_path)
    texts = extraction_texts(8)
    a = cache.features(SentenceTransformerAdapter(tiny_sentence), texts)
    b = cache.features(SentenceTransformerAdapter(tiny_sentence, max_length=5), texts)
    assert a.path != b.path and cache.misses == 2
    cache.features(SentenceTransformerAdapter(tiny_sentence), texts)
    assert cache.hits == 1


def test_missing_model_is_named():
    with pytest.raises(OSError, match="Cannot load sentence-transformers model 'no-such-org/no-such-st'"):
        SentenceTransformerAdapter("no-such-org/no-such-st")


def test_checkpoints_print_no_shared_tensor_note_and_resume_exactly(tiny_sentence, topic_data, tmp_path, capfd, caplog):
    """Each checkpoint used to print Accelerate's multi-kilobyte 'Removed shared tensor {...}' warning."""
    import logging

    train = mt.load_labeled(topic_data[0])
    settings = dict(strategy="full", num_epochs=2, learning_rate=1e-3, batch_size=16, progress_bar=False, report_to=[],
                    plot=False, save_checkpoints="all")

    def run(out, **extra):
        model = mt.TransferModel.from_backbone("sentence", tiny_sentence, labels=train.label_names, seed=0)
        return mt.Trainer(model, mt.TrainingArguments(output_dir=str(out), **{**settings, **extra}), train)

    with caplog.at_level(logging.WARNING):
        full = run(tmp_path / "full")
        full.train()
    assert "Removed shared tensor" not in caplog.text + capfd.readouterr().err
    partial = run(tmp_path / "part", num_epochs=2)
    partial.train()
    resumed = run(tmp_path / "part", resume_from_checkpoint=str(tmp_path / "part" / "checkpoints" / "epoch_1"))
    resumed.train()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
