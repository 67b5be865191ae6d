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


@pytest.mark.parametrize("family", ["distilbert", "roberta"])
def test_other_encoder_families_get_groups_and_train(family, tiny_bert, tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    import mtransfer as mt

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    if family == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=3, n_heads=2, hidden_dim=37,
                                                 max_position_embeddings=64))
    else:
        model = RobertaModel(RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3,
                                           num_attention_heads=2, intermediate_size=37, max_position_embeddings=70,
                                           pad_token_id=tok.pad_token_id))
    model.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    adapter = TextAdapter(tmp_path / family)
    assert [g.name for g in adapter.layer_groups()] == ["embeddings", "layer.0", "layer.1", "layer.2"]
    assert adapter.embedding_dim == 32
    rows = [{"text": t, "label": lab} for t, lab in [("bread cheese", "food"), ("goal team", "sport")] * 8]
    train = mt.load_labeled(rows)
    m = mt.TransferModel.from_backbone("text", tmp_path / family, labels=train.label_names)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "out"), strategy="gradual_unfreezing", num_epochs=2,
                                learning_rate=1e-3, progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    mt.Trainer(m, args, train).train()
    loaded = mt.TransferModel.from_pretrained(tmp_path / "out" / "model")
    assert torch.equal(loaded.predict_outputs(["bread"]), m.predict_outputs(["bread"]))
