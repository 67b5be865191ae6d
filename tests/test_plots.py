"""mtransfer.plots: figures written as whole PNG files."""

from mtransfer.plots import plot_confusion_matrix, plot_learning_curve


def test_learning_curve_and_confusion_matrix_are_png_files(tmp_path):
    history = [{"epoch": 1, "phase": "head", "train_loss": 1.0, "eval_loss": 0.9, "eval_accuracy": 0.5},
               {"epoch": 2, "phase": "unfreeze all", "train_loss": 0.6, "eval_loss": 0.7, "eval_accuracy": 0.7}]
    curve = plot_learning_curve(history, tmp_path / "curve.png", metric="eval_accuracy")
    confusion = plot_confusion_matrix(["a", "b", "a"], ["a", "a", "a"], ["a", "b"], tmp_path / "cm.png")
    for path in (curve, confusion):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curve.png"]  # no temporary left
