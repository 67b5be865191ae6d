import pytest
import torch

from mtransfer.heads import Head, HeadConfig, tune_thresholds


def test_mlp_head_shape_and_layers():
    head = Head(HeadConfig(num_outputs=4, input_dim=8, hidden_sizes=[16, 12], dropout=0.2, activation="relu"))
    assert head(torch.randn(5, 8)).shape == (5, 4)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 12), (12, 4)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in head.modules()) == 2


def test_regression_loss_is_on_standardized_targets_and_predictions_in_original_units():
    head = Head(HeadConfig(task="regression", num_outputs=1, input_dim=4, dropout=0.0))
    targets = torch.tensor([[1000.0], [3000.0], [2000.0]])
    head.set_target_stats(targets)
    assert head.target_mean.item() == pytest.approx(2000.0)
    assert head.target_std.item() == pytest.approx(816.4966, rel=1e-5)
    standardized = torch.tensor([[1.5], [-0.5]])
    assert head.predict(standardized).flatten().tolist() == pytest.approx([2000 + 1.5 * 816.4966, 2000 - 0.5 * 816.4966], rel=1e-5)
    # a perfect standardized output has zero loss in original units
    exact = (targets - head.target_mean) / head.target_std
    assert head.loss(exact, targets).item() == pytest.approx(0.0, abs=1e-10)


def test_multilabel_thresholds_per_label():
    head = Head(HeadConfig(task="multi_label_classification", num_outputs=3, input_dim=2))
    logits = torch.logit(torch.tensor([[0.6, 0.3, 0.9], [0.2, 0.55, 0.4]]))
    assert head.predict(logits).tolist() == [[1, 0, 1], [0, 1, 0]]
    head.set_thresholds([0.7, 0.25, 0.95])
    assert head.predict(logits).tolist() == [[0, 1, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"thresholds must lie in \(0, 1\)"):
        head.set_thresholds(1.5)


def test_tune_thresholds_finds_the_separating_value():
    probs = torch.tensor([[0.1, 0.8], [0.3, 0.9], [0.35, 0.2], [0.6, 0.7]])
    labels = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 1]])
    t = tune_thresholds(probs, labels)
    assert ((probs >= t).long() == labels).all()


def test_head_config_errors_name_the_field():
    with pytest.raises(ValueError, match="HeadConfig.task='ranking'"):
        HeadConfig(task="ranking", input_dim=4)
    with pytest.raises(ValueError, match="num_outputs >= 2"):
        HeadConfig(num_outputs=1, input_dim=4)
    with pytest.raises(ValueError, match="HeadConfig.dropout"):
        HeadConfig(input_dim=4, dropout=1.0)


def test_head_save_load_round_trip(tmp_path):
    head = Head(HeadConfig(task="regression", num_outputs=2, input_dim=3, hidden_sizes=[5]))
    head.set_target_stats(torch.randn(10, 2) * 7 + 3)
    head.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = Head.from_pretrained(tmp_path).eval()
    x = torch.randn(4, 3)
    assert torch.equal(back.predict(back(x)), head.eval().predict(head(x)))
