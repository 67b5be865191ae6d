"""scripts/gpu_checks.py, dry-run on CPU with tiny models: every part reports, and a part past its budget is ended while
the others still run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path, *args):
    out = tmp_path / "gpu_checks.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_checks.py"), "--tiny", "--output", str(out), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "MTRANSFER_CACHE": str(tmp_path / "cache" / "features")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_part_reports_its_figures_on_a_tiny_cpu_configuration(tmp_path):
    figures = run(tmp_path)
    parts = figures["parts"]
    assert [parts[p]["status"] for p in ("minilm", "ctc", "matrix")] == ["done"] * 3, parts
    for precision in ("fp32", "bf16"):
        run_ = parts["minilm"]["runs"][precision]
        assert run_["texts_per_s"]["mtransfer"] > 0 and run_["texts_per_s"]["hf_trainer"] > 0
        assert run_["ratio_mtransfer_over_trainer"] == pytest.approx(
            run_["epoch_s"]["mtransfer"] / run_["epoch_s"]["hf_trainer"], rel=0.02)
    assert [(r["precision"], r["train_utt_per_s"] > 0) for r in parts["ctc"]["rows"]] == [("fp32", True), ("bf16", True)]
    matrix = parts["matrix"]
    assert matrix["cells"] == 6 and matrix["wall_s_per_cell"] > 0 and matrix["full_matrix_5_seeds"]["cells"] > 100
    assert not list(tmp_path.glob(".gpu_checks.*"))  # the parts' own files are merged and removed


@pytest.mark.slow
def test_a_part_past_its_budget_is_ended_and_the_next_still_runs(tmp_path):
    figures = run(tmp_path, "--parts", "matrix,ctc", "--budgets", "matrix=3")
    assert figures["parts"]["matrix"]["status"] == "ended at its budget of 3 s"
    assert figures["parts"]["matrix"]["seconds"] < 30  # ended with the processes it started
    assert figures["parts"]["ctc"]["status"] == "done"
