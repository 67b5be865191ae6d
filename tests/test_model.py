import pytest
import torch

import mtransfer as mt
from mtransfer.model import TransferModel


def texts(topic_data):
    return [r["text"] for r in topic_data[1]]


def test_save_load_identical_predictions_and_labels(tiny_bert, topic_data, tmp_path):
    model = TransferModel.from_backbone("text", tiny_bert, labels=["food", "science", "sport"], seed=0,
                                        head={"hidden_sizes": [16], "activation": "tanh"}, pooling="cls", max_length=20)
    folder = model.save_pretrained(tmp_path / "m")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "config.json" in files and "model.safetensors" in files and "backbone/model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pkl", ".pt", ".pth", ".pickle"))]
    loaded = TransferModel.from_pretrained(folder)
    assert loaded.label_names == ["food", "science", "sport"]
    assert loaded.adapter.pooling == "cls" and loaded.adapter.max_length == 20
    assert loaded.head.config.hidden_sizes == [16]
    assert torch.equal(loaded.predict_outputs(texts(topic_data)), model.predict_outputs(texts(topic_data)))
    assert loaded.predict(texts(topic_data)) == model.predict(texts(topic_data))
    proba = loaded.predict_proba(texts(topic_data)[:3])
    assert proba.shape == (3, 3) and torch.allclose(proba.sum(1), torch.ones(3))


def test_interrupted_save_leaves_nothing_behind(tiny_bert, tmp_path, monkeypatch):
    model = TransferModel.from_backbone("text", tiny_bert, labels=2)

    def boom(folder):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model.adapter, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_overwriting_a_saved_model_is_atomic(tiny_bert, tmp_path):
    a = TransferModel.from_backbone("text", tiny_bert, labels=["x", "y"], seed=1)
    b = TransferModel.from_backbone("text", tiny_bert, labels=["x", "y"], seed=2)
    a.save_pretrained(tmp_path / "m")
    b.save_pretrained(tmp_path / "m")
    loaded = TransferModel.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.head.out.weight, b.head.out.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_reset_head_and_repr(tiny_bert):
    model = TransferModel.from_backbone("text", tiny_bert, labels=2)
    model.reset_head(["a", "b", "c", "d"])
    assert model.head.config.num_outputs == 4 and model.label_names == ["a", "b", "c", "d"]
    assert "task=single_label_classification" in repr(model)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an mtransfer model folder"):
        TransferModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not an mtransfer config"):
        TransferModel.from_pretrained(tmp_path)


def test_unknown_modality():
    with pytest.raises(ValueError, match="Unknown adapter type 'smell'"):
        TransferModel.from_backbone("smell", "x", labels=2)


def test_builtin_names_resolve_in_one_place_for_the_modalities_that_read_them():
    from mtransfer.builtins import MODELS, resolve_model

    assert resolve_model("builtin:efficientnet-lite0", "torch") == "efficientnet_lite0"
    assert resolve_model("some/hub-id", "text") == "some/hub-id"
    assert {"builtin:minilm", "builtin:efficientnet-lite0", "builtin:w2v-bert-small"} <= set(MODELS)
    with pytest.raises(ValueError, match="builtin:efficientnet-lite0 is read by the 'torch' or 'image' modality, not "
                                         "'text'"):
        TransferModel.from_backbone("text", "builtin:efficientnet-lite0", labels=2)
    with pytest.raises(ValueError, match="unknown builtin model 'builtin:bert'; expected one of builtin:minilm, "):
        TransferModel.from_backbone("text", "builtin:bert", labels=2)


def test_predict_proba_refuses_regression(tiny_bert):
    model = TransferModel.from_backbone("text", tiny_bert, labels=["y"], task="regression")
    with pytest.raises(ValueError, match="predict_proba is for classification"):
        model.predict_proba(["the"])


def test_set_trainable_rejects_unknown_groups(tiny_bert):
    model = TransferModel.from_backbone("text", tiny_bert, labels=2)
    with pytest.raises(ValueError, match=r"Unknown layer group 'layer.9'"):
        model.set_trainable(["layer.9"])
    with pytest.raises(ValueError, match=r"expected a name or a position 0..3"):
        model.set_trainable([4])


def test_groups_are_held_by_position_and_head_is_reserved():
    """EfficientNet-Lite's last conv block was a group named 'head' and trained with the task head."""
    from torch import nn

    model = TransferModel.from_backbone("torch", "efficientnet_lite0", labels=3, pretrained=False)
    names = [g.name for g in model.layer_groups()]
    assert names[-2:] == ["conv_head", "head"] and len(set(names)) == len(names)
    model.set_trainable([len(names) - 1])  # the task head only
    conv_head = model.adapter.backbone._conv_head
    assert not conv_head.weight.requires_grad and all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.adapter.backbone._bn1.training  # its batch-norm statistics stay frozen

    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.b(self.a(x))

        def layer_groups(self):
            return [("low", [self.a]), ("head", [self.b])]

    clash = TransferModel.from_backbone("torch", Clash(), labels=2)
    with pytest.raises(ValueError, match=r"a layer group named 'head'.*reserved for the task head"):
        clash.layer_groups()
    Clash.layer_groups = lambda self: [("low", [self.a]), ("low", [self.b])]
    with pytest.raises(ValueError, match=r"duplicate layer-group names \['low'\]"):
        TransferModel.from_backbone("torch", Clash(), labels=2).layer_groups()


def test_frozen_groups_stay_in_eval_mode(tiny_bert):
    model = TransferModel.from_backbone("text", tiny_bert, labels=2)
    model.set_trainable(["head", "layer.1"])
    model.train()
    assert not model.adapter.backbone.encoder.layer[0].training
    assert not model.adapter.backbone.embeddings.dropout.training  # a group made of parameters still goes to eval
    assert model.adapter.backbone.encoder.layer[1].training and model.head.training
    assert mt.STRATEGIES


def test_a_single_text_is_one_input_not_a_sequence_of_characters(tiny_bert):
    model = TransferModel.from_backbone("text", tiny_bert, labels=["a", "b"], seed=0)
    one = model.predict("one text")
    assert one in ("a", "b") and [one] == model.predict(["one text"])
    assert model.predict_proba("one text").shape == (2,)
    assert torch.equal(model.predict_outputs("one text"), model.predict_outputs(["one text"]))
    with pytest.raises(ValueError, match=r"batch_size=0: expected an integer >= 1"):
        model.predict(["x"], batch_size=0)


def test_a_model_folder_names_its_modality_and_older_folders_naming_adapter_type_still_load(tiny_bert, tmp_path):
    import json

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["a", "b"], seed=0)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["modality"] == "text" and "adapter_type" not in config
    config["adapter_type"] = config.pop("modality")  # as mtransfer 0.1 wrote it
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    again = mt.TransferModel.from_pretrained(tmp_path / "m")
    assert again.adapter.modality == "text" and again.predict(["x y"]) == model.predict(["x y"])
