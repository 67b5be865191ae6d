import pytest
import torch

from mtransfer.adapters.text import TextAdapter


def test_layer_groups_embeddings_blocks_and_no_unused_pooler(tiny_bert):
    adapter = TextAdapter(tiny_bert, pooling="mean")
    groups = adapter.layer_groups()
    assert [g.name for g in groups] == ["embeddings", "layer.0", "layer.1"]
    grouped = {id(p) for g in groups for p in g.parameters()}
    unused = {id(p) for p in adapter.unused_parameters()}
    # every backbone parameter is in exactly one group, or is the unused pooler
    assert grouped | unused == {id(p) for p in adapter.backbone.parameters()}
    assert not grouped & unused
    assert all(not p.requires_grad for p in adapter.unused_parameters())


def test_pooler_pooling_adds_the_top_group(tiny_bert):
    adapter = TextAdapter(tiny_bert, pooling="pooler")
    assert [g.name for g in adapter.layer_groups()][-1] == "top"
    assert adapter.unused_parameters() == []


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_pooling_modes(tiny_bert, pooling):
    adapter = TextAdapter(tiny_bert, pooling=pooling).eval()
    batch = adapter.preprocess(["the cat", "the a of and to in is it bread"])
    feats = adapter.forward_features(batch)
    assert feats.pooled.shape == (2, 32) and feats.tokens.shape[:2] == batch["input_ids"].shape
    hidden = adapter.backbone(**batch).last_hidden_state
    if pooling == "cls":
        assert torch.allclose(feats.pooled, hidden[:, 0])
    elif pooling == "mean":
        n = int(batch["attention_mask"][0].sum())
        assert torch.allclose(feats.pooled[0], hidden[0, :n].mean(0), atol=1e-6)


def test_max_length_truncates_and_is_checked(tiny_bert):
    adapter = TextAdapter(tiny_bert, max_length=6)
    batch = adapter.preprocess(["the a of and to in is it that on with"])
    assert batch["input_ids"].shape[1] == 6
    assert TextAdapter(tiny_bert).max_length == 64  # the tiny model's limit, below the default 128
    with pytest.raises(ValueError, match="max_length=512 exceeds what .* supports"):
        TextAdapter(tiny_bert, max_length=512)


def test_sentence_pairs(tiny_bert):
    adapter = TextAdapter(tiny_bert)
    batch = adapter.preprocess([("the cat", "bread")])
    assert batch["token_type_ids"].max().item() == 1


def test_unknown_model_while_offline_names_it():
    with pytest.raises(OSError, match=r"Cannot load tokenizer 'no-such-org/no-such-model': it is not a local folder, "
                                      r"not in the local Hugging Face cache"):
        TextAdapter("no-such-org/no-such-model")


def test_missing_local_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        TextAdapter(str(tmp_path / "missing-model"))


def test_bad_inputs_named(tiny_bert):
    adapter = TextAdapter(tiny_bert)
    with pytest.raises(ValueError, match=r"train.csv: item 1 is int"):
        adapter.validate_inputs(["ok", 3], source="train.csv")


def test_random_init_has_same_architecture_different_weights(tiny_bert):
    torch.manual_seed(1)
    rand = TextAdapter(tiny_bert, pretrained=False)
    pre = TextAdapter(tiny_bert)
    assert [n for n, _ in rand.backbone.named_parameters()] == [n for n, _ in pre.backbone.named_parameters()]
    w1 = rand.backbone.encoder.layer[0].attention.self.query.weight
    w2 = pre.backbone.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(w1, w2)


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling='max'; expected one of cls, mean, pooler"):
        TextAdapter("whatever", pooling="max")
