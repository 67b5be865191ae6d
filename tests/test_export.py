"""mtransfer.export: trained models as transformers folders that pipeline loads, checked against mtransfer."""


import pytest

import mtransfer as mt
from mtransfer.cli import main


@pytest.fixture(scope="module")
def run_dir(tiny_bert, topic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train = mt.load_labeled(topic_data[0])
    val = mt.load_labeled(topic_data[1], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=str(out), strategy="two_stage", num_epochs=3, head_epochs=1,
                                learning_rate=1e-3, progress_bar=False, report_to=[], save_checkpoints=False)
    mt.Trainer(model, args, train, val).train()
    return out


def pipeline_scores(results, label_names):
    """A pipeline's ``top_k=None`` output as a tensor in label order. Shape: ``(n, labels)``."""
    import torch

    return torch.tensor([[{r["label"]: r["score"] for r in rows}[n] for n in label_names] for rows in results])


@pytest.mark.parametrize("arch", ["vit", "convnext", "resnet"])
def test_image_export_gives_the_same_pipeline_scores(arch, tiny_vision, shape_data, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from mtransfer.export import export_transformers

    rows = shape_data[1][:4]
    model = mt.TransferModel.from_backbone("image", tiny_vision(arch), labels=["hbar", "square", "vbar"], seed=0)
    folder = export_transformers(model, tmp_path / "hf")
    pipe = pipeline("image-classification", model=str(folder))
    got = pipeline_scores(pipe([Image.fromarray(r["image"]) for r in rows], top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba([r["image"] for r in rows]), atol=1e-5)
    assert pipe.model.config.problem_type == "single_label_classification"


def _image_files(folder, seed=0):
    """Image files in every mode a user's folder holds: RGB, RGBA and LA with transparent pixels of random colour
    underneath, P with a transparent palette entry, L, CMYK, 16-bit grayscale PNG, and an EXIF-rotated JPEG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def pixels(channels, dtype=np.uint8, high=256):
        return rng.integers(0, high, size=(20 + int(rng.integers(0, 20)), 24, channels)).astype(dtype)

    for i in range(3):
        rgba = pixels(4)
        rgba[..., 3] = np.where(rng.random(rgba.shape[:2]) < 0.4, 0, rgba[..., 3])  # transparent, colour beneath
        made = {"rgb": Image.fromarray(pixels(3)), "rgba": Image.fromarray(rgba, "RGBA"),
                "la": Image.fromarray(rgba[..., [0, 3]], "LA"), "l": Image.fromarray(pixels(1)[..., 0], "L"),
                "cmyk": Image.fromarray(pixels(4), "CMYK"),
                "i16": Image.fromarray(pixels(1, np.uint16, 65536)[..., 0])}
        palette = Image.fromarray(pixels(3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        palette.info["transparency"] = 3
        made["p"] = palette
        for name, image in made.items():
            path = folder / f"{name}{i}.{'jpg' if name == 'cmyk' else 'png'}"
            image.save(path)
            paths.append(path)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees to display
        path = folder / f"exif{i}.jpg"
        Image.fromarray(pixels(3)).save(path, exif=exif)
        paths.append(path)
    return paths


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_every_image_mode_scores_the_same_through_the_exported_pipeline(arch, tiny_vision, tmp_path):
    """An export used to disagree with mtransfer on RGBA files (mtransfer composited them over white, the pipeline
    drops the alpha channel) and on EXIF-rotated photos (the pipeline turns them upright)."""
    import torch
    from PIL import Image
    from transformers import pipeline

    from mtransfer.export import export_transformers

    paths = _image_files(tmp_path / "images")
    assert {Image.open(p).mode for p in paths} >= {"RGB", "RGBA", "LA", "P", "L", "CMYK", "I;16"}
    model = mt.TransferModel.from_backbone("image", tiny_vision(arch), labels=["a", "b", "c"], seed=0)
    pipe = pipeline("image-classification", model=str(export_transformers(model, tmp_path / "hf")))
    got = pipeline_scores(pipe([str(p) for p in paths], top_k=None), model.label_names)
    ours = model.predict_proba([str(p) for p in paths])
    differ = [p.name for p, a, b in zip(paths, got, ours) if not torch.allclose(a, b, atol=1e-5)]
    assert not differ, f"{len(differ)} of {len(paths)} files score differently: {differ}"


def test_regression_and_multilabel_exports_come_out_right(tiny_vision, shape_data, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from mtransfer.export import export_transformers

    images = [r["image"] for r in shape_data[1][:3]]
    reg = mt.TransferModel.from_backbone("image", tiny_vision("resnet"), labels=["price"], task="regression", seed=0)
    reg.head.set_target_stats(torch.tensor([[100.0], [300.0], [250.0]]))
    pipe = pipeline("image-classification", model=str(export_transformers(reg, tmp_path / "reg")))
    values = [rows[0]["score"] for rows in pipe([Image.fromarray(x) for x in images], top_k=None)]
    assert values == pytest.approx(reg.predict(images), abs=1e-3)  # no softmax/sigmoid: original units
    multi = mt.TransferModel.from_backbone("image", tiny_vision("vit"), labels=["a", "b", "c"],
                                           task="multi_label_classification", seed=0)
    pipe = pipeline("image-classification", model=str(export_transformers(multi, tmp_path / "multi")))
    got = pipeline_scores(pipe([Image.fromarray(x) for x in images], top_k=None), multi.label_names)
    assert torch.allclose(got, multi.predict_proba(images), atol=1e-5)  # independent sigmoids


@pytest.mark.parametrize("arch", ["wav2vec2", "hubert", "w2v-bert"])
def test_audio_export_gives_the_same_pipeline_scores(arch, tiny_speech, tmp_path):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers
    from tests.tiny import tone

    model = mt.TransferModel.from_backbone("audio", tiny_speech(arch), labels=["x", "y", "z"], seed=0, max_duration=0.5)
    pipe = pipeline("audio-classification", model=str(export_transformers(model, tmp_path / "hf")))
    # the last two are longer than max_duration (training crops): evaluation and the pipeline both read the whole clip
    clips = [tone(0.4, 16000, (300.0,))[0].numpy(), tone(1.3, 16000, (900.0, 1200.0))[0].numpy(),
             tone(3.1, 16000, (500.0,))[0].numpy()]
    for clip in clips:
        got = pipeline_scores([pipe(clip, top_k=None)], model.label_names)
        assert torch.allclose(got, model.predict_proba([(clip, 16000)]), atol=1e-5)


def test_text_export_when_the_classifier_reads_the_same_feature(tiny_bert, tmp_path, capsys):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["neg", "pos"], pooling="pooler", seed=0,
                                           max_length=8)
    model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model-dir", str(tmp_path / "m"), "--output", str(tmp_path / "hf")]) == 0
    pipe = pipeline("text-classification", model=str(tmp_path / "hf"))
    texts = ["bread cheese soup", "goal match team the"]
    got = pipeline_scores(pipe(texts, top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    # the native classifier cannot truncate by itself: the tokenizer carries the training length for truncation=True
    got = pipeline_scores(pipe([LONG, LONG + " x"], top_k=None, truncation=True), model.label_names)
    assert torch.allclose(got, model.predict_proba([LONG, LONG + " x"]), atol=1e-5)
    mlp = mt.TransferModel.from_backbone("text", tiny_bert, labels=["neg", "pos"], pooling="pooler",
                                         head={"hidden_sizes": [8]}, seed=0)
    with pytest.raises(ValueError, match="an MLP head has no transformers-native form"):
        export_transformers(mlp, tmp_path / "no")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("native", [True, False])
def test_an_export_names_no_local_path_and_no_loading_flag(native, run_dir, tiny_bert, tmp_path):
    """An export goes to the Hub as written: config.json used to hold the run folder (a sub-config's _name_or_path)
    and tokenizer_config.json is_local / local_files_only."""
    if native:  # a pooler-pooled model: BertForSequenceClassification
        model_dir = tmp_path / "run" / "model"
        mt.TransferModel.from_backbone("text", tiny_bert, labels=["neg", "pos"], pooling="pooler", seed=0,
                                       max_length=8).save_pretrained(model_dir)
    else:  # the trained run (mean pooling: the custom head), whose card the export writes
        model_dir = run_dir / "model"
    assert main(["export", "--model-dir", str(model_dir), "--output", str(tmp_path / "hf")]) == 0
    files = [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "tokenizer_config.json", "model.safetensors",
                                       *([] if native else ["README.md", "hf_custom.py"])}
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        # (the card's example may load the export folder itself by its path: that is where the user put it)
        for needle in (str(model_dir.parent), str(tiny_bert), "local_files_only", '"is_local"', "_name_or_path"):
            assert needle not in text, f"{path.name} holds {needle!r}"


LONG = "bread cheese soup goal match team atom energy " * 4  # 32 words, far over max_length=8


class _ListHandler(__import__("logging").Handler):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def emit(self, record):
        self.seen.append(record.getMessage())


@pytest.mark.parametrize("pooling, hidden", [("mean", []), ("cls", [8])])
def test_text_export_with_a_registered_custom_head(pooling, hidden, tiny_bert, tmp_path):
    """Mean / CLS pooling (and MLP heads) have no native BERT classifier: the export ships its model code."""
    import json

    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["food", "science", "sport"], pooling=pooling,
                                           head={"hidden_sizes": hidden}, seed=0, max_length=8)
    folder = export_transformers(model, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("MTransferForSequenceClassification")
    assert (folder / "hf_custom.py").is_file()
    # the model truncates itself: the tokenizer keeps the encoder's limit (64 positions), so an input between the
    # training length and that limit is not reported as too long
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 64
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    seen = []
    handler = _ListHandler(seen)
    hf_logging.get_logger("transformers").addHandler(handler)
    try:
        assert 8 < len(tokenizer(LONG)["input_ids"]) <= 64
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
    assert not [m for m in seen if "longer than the specified maximum" in m]
    pipe = pipeline("text-classification", model=str(folder), trust_remote_code=True)
    # longer than the 8 training tokens: the exported model truncates as the tokenizer did in training, so a
    # pipeline called without truncation=True agrees (it used to score the whole text)
    texts = ["bread cheese soup", "goal match team the", "atom energy", LONG, LONG + " the end"]
    assert len(model.adapter.tokenizer(LONG)["input_ids"]) > 8
    got = pipeline_scores(pipe(texts, top_k=None), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    got = pipeline_scores(pipe(texts, top_k=None, truncation=True), model.label_names)
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)
    got = pipeline_scores(pipe(texts, top_k=None, batch_size=5), model.label_names)  # padded batches
    assert torch.allclose(got, model.predict_proba(texts), atol=1e-5)


def test_text_regression_export_in_original_units(tiny_bert, tmp_path):
    import torch
    from transformers import pipeline

    from mtransfer.export import export_transformers

    model = mt.TransferModel.from_backbone("text", tiny_bert, labels=["stars"], task="regression", seed=0)
    model.head.set_target_stats(torch.tensor([[1.0], [5.0], [4.0]]))
    pipe = pipeline("text-classification", model=str(export_transformers(model, tmp_path / "hf")), trust_remote_code=True)
    texts = ["bread cheese soup", "goal match team the"]
    assert [r[0]["score"] for r in pipe(texts, top_k=None)] == pytest.approx(model.predict(texts), abs=1e-4)
