import numpy as np
import pytest
import torch
from PIL import Image

import mtransfer as mt
from mtransfer.adapters import ImageAdapter
from tests.strategy_checks import train_and_reload

STRATEGIES = ["frozen", "last_n", "full", "two_stage", "gradual_unfreezing", "chain_thaw", "contrastive"]


@pytest.fixture(scope="module")
def shapes(shape_data):
    train_rows, eval_rows = shape_data
    train = mt.load_labeled(train_rows, input_column="image")
    return train, mt.load_labeled(eval_rows, input_column="image", label_names=train.label_names)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ["vit", "convnext", "resnet", "timm"])
def test_every_strategy_trains_and_reloads(arch, strategy, tiny_vision, shapes, tmp_path):
    train, val = shapes
    model = mt.TransferModel.from_backbone("image", tiny_vision(arch), labels=train.label_names, seed=0)
    train_and_reload(model, train, val, strategy, tmp_path, val.inputs[:5])


@pytest.mark.parametrize("arch, pooling, groups", [
    ("vit", "cls", ["embeddings", "layer.0", "layer.1", "top"]),
    ("dinov2", "pooler", ["embeddings", "layer.0", "layer.1", "top"]),
    ("convnext", "pooler", ["embeddings", "layer.0", "layer.1", "layer.2", "layer.3", "top"]),
    ("resnet", "pooler", ["embeddings", "layer.0", "layer.1", "layer.2", "layer.3"]),
    ("swin", "pooler", ["embeddings", "layer.0", "layer.1", "top"]),
    ("timm", "pooler", ["stem", "layer.0", "layer.1", "layer.2", "layer.3", "layer.4", "layer.5"]),
])
def test_pooled_feature_and_layer_groups_per_architecture(arch, pooling, groups, tiny_vision):
    adapter = ImageAdapter(tiny_vision(arch)).eval()
    assert adapter.pooling == pooling
    assert [g.name for g in adapter.layer_groups()] == groups
    # every used backbone parameter is in exactly one group
    grouped = [id(p) for g in adapter.layer_groups() for p in g.parameters()]
    assert len(grouped) == len(set(grouped))
    unused = {id(p) for p in adapter.unused_parameters()}
    assert set(grouped) | unused == {id(p) for p in adapter.backbone.parameters()}


def test_pooling_reads_the_right_tensor(tiny_vision, shape_data):
    images = [r["image"] for r in shape_data[0][:3]]
    vit = ImageAdapter(tiny_vision("vit")).eval()
    batch = vit.preprocess(images)
    with torch.no_grad():
        out = vit.backbone(**batch)
        assert torch.equal(vit.forward_features(batch).pooled, out.last_hidden_state[:, 0])
        assert len(vit.unused_parameters()) == 2  # ViT's tanh pooler is not used with CLS pooling
        mean = ImageAdapter(tiny_vision("vit"), pooling="mean").eval()
        assert torch.allclose(mean.forward_features(batch).pooled, out.last_hidden_state[:, 1:].mean(1))  # CLS left out
        cnn = ImageAdapter(tiny_vision("resnet")).eval()
        feats = cnn.forward_features(cnn.preprocess(images))
        assert feats.pooled.shape == (3, 32) and feats.tokens.shape[0] == 3
    with pytest.raises(ValueError, match="pooling='cls' but ResNetModel has no CLS token"):
        ImageAdapter(tiny_vision("resnet"), pooling="cls")
    with pytest.raises(ValueError, match="ImageAdapter pooling='max'; expected one of auto, cls, mean, pooler"):
        ImageAdapter(tiny_vision("vit"), pooling="max")


def test_evaluation_is_the_image_processor_and_augmentation_only_trains(tiny_vision, shape_data):
    from transformers import AutoImageProcessor

    folder = tiny_vision("convnext")
    adapter = ImageAdapter(folder)
    images = [r["image"] for r in shape_data[0][:4]]
    pil = [Image.fromarray(x) for x in images]
    expected = AutoImageProcessor.from_pretrained(folder)(images=pil, return_tensors="pt")["pixel_values"]
    assert torch.equal(adapter.preprocess(images)["pixel_values"], expected)
    assert torch.equal(adapter.preprocess(images)["pixel_values"], adapter.preprocess(images)["pixel_values"])
    torch.manual_seed(0)
    a = adapter.preprocess(images, training=True)["pixel_values"]
    b = adapter.preprocess(images, training=True)["pixel_values"]
    assert a.shape == expected.shape and not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(a, adapter.preprocess(images, training=True)["pixel_values"])  # seeded: reproducible
    plain = ImageAdapter(folder, augmentation=None)
    assert torch.equal(plain.preprocess(images, training=True)["pixel_values"], expected)
    custom = ImageAdapter(folder, augmentation={"crop_scale": [0.9, 1.0], "hflip": 0.0, "color_jitter": 0.0})
    assert custom.get_config()["augmentation"]["crop_scale"] == [0.9, 1.0]
    with pytest.raises(ValueError, match=r"augmentation: unknown keys \['flip'\]"):
        ImageAdapter(folder, augmentation={"flip": 0.5})
    with pytest.raises(ValueError, match=r"crop_scale=\(0.5, 2.0\)"):
        ImageAdapter(folder, augmentation={"crop_scale": [0.5, 2.0]})


def test_input_kinds_give_the_same_features(tiny_vision, tmp_path):
    adapter = ImageAdapter(tiny_vision("resnet")).eval()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (24, 30, 3)).astype(np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    inputs = [arr, str(path), path, Image.fromarray(arr), {"bytes": path.read_bytes(), "path": None},
              {"bytes": None, "path": str(path)}, torch.from_numpy(arr).permute(2, 0, 1), arr.astype(np.float32) / 255]
    with torch.no_grad():
        feats = adapter.forward_features(adapter.preprocess(inputs)).pooled
    for i in range(1, len(inputs)):
        assert torch.allclose(feats[i], feats[0], atol=1e-6), i


def test_imagefolder_trains_end_to_end(tiny_vision, tmp_path, shape_data):
    root = tmp_path / "imgs"
    for i, row in enumerate(shape_data[0]):
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(row["image"]).save(root / row["label"] / f"{i}.png")
    data = mt.load_labeled(str(root), input_column="image")
    assert data.label_names == ["hbar", "square", "vbar"]  # class names, not ClassLabel ids
    model = mt.TransferModel.from_backbone("image", tiny_vision("resnet"), labels=data.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="frozen", num_epochs=1, progress_bar=False,
                                report_to=[], plot=False, save_checkpoints=False)
    mt.Trainer(model, args, data).train()
    assert set(model.predict(data.inputs[:4])) <= set(data.label_names)


def test_bad_image_files_stop_the_run_before_training_or_are_skipped(tiny_vision, tmp_path, shape_data):
    paths = []
    for i, row in enumerate(shape_data[0][:12]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(row["image"]).save(p)
        paths.append({"image": str(p), "label": row["label"]})
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    bad = [str(tmp_path / n) for n in ("corrupt.png", "empty.jpg", "notes.txt", "missing.png")]
    rows = paths + [{"image": b, "label": "square"} for b in bad]
    data = mt.load_labeled(rows, input_column="image")
    model = mt.TransferModel.from_backbone("image", tiny_vision("resnet"), labels=data.label_names, seed=0)
    out = tmp_path / "run"
    args = dict(output_dir=str(out), strategy="frozen", num_epochs=1, progress_bar=False, report_to=[], plot=False)
    with pytest.raises(ValueError) as err:
        mt.Trainer(model, mt.TrainingArguments(**args), data)
    msg = str(err.value)
    assert "4 of 16 inputs cannot be read" in msg
    for b in bad:
        assert b in msg
    assert "the file is empty" in msg and "no such image file" in msg and "skip_bad_inputs=True" in msg
    assert not out.exists()
    trainer = mt.Trainer(model, mt.TrainingArguments(**args, skip_bad_inputs=True), data)
    assert len(trainer.train_dataset) == 12 and trainer.skipped_inputs == {"train_dataset": [12, 13, 14, 15]}
    trainer.train()
    with pytest.raises(ValueError, match="corrupt.png"):
        model.predict([bad[0]])


def test_image_regression_end_to_end(tiny_vision, tmp_path):
    """Predict a number from a photo (the lecture's price example): here, the size of a bright square."""
    rng = np.random.default_rng(0)

    def rows(n):
        out = []
        for _ in range(n):
            side = int(rng.integers(4, 30))
            img = rng.integers(0, 40, (32, 32, 3)).astype(np.uint8)
            img[:side, :side] = 220
            out.append({"image": img, "price": 10.0 + 3.0 * side})
        return out

    train = mt.load_labeled(rows(96), input_column="image", label_column="price", task="regression")
    val = mt.load_labeled(rows(32), input_column="image", label_column="price", task="regression")
    model = mt.TransferModel.from_backbone("image", tiny_vision("resnet"), labels=["price"], task="regression",
                                           seed=0, augmentation=None)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "run"), strategy="full", num_epochs=15, learning_rate=3e-3,
                                batch_size=16, progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    result = mt.Trainer(model, args, train, val).train()
    preds = np.array(model.predict(val.inputs))
    truth = val.targets[:, 0].numpy()
    r2 = 1 - ((preds - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert r2 > 0.7, (r2, result)
    assert 10 < preds.mean() < 110  # original units (prices), not standardised values
