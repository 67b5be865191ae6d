"""How long the CLI takes to start, against baselines measured in the same run.

    .venv/bin/python scripts/bench_cli_startup.py [--repeats 3] [--work-dir /tmp/bench_cli]

- every subcommand's ``--help`` and ``mtransfer modalities`` (they load no model: no torch is
  imported; target under 1 s each), against a bare ``python -c pass``;
- ``mtransfer predict`` on a saved MiniLM-L6 text classifier (two texts), against a bare
  ``transformers.pipeline("text-classification", trust_remote_code=True)`` load of the same model's export (a
  custom mean-pooling head) and the same
  two texts (the floor: the libraries' own import and load time).

Best of ``--repeats`` runs each (the machine's other load shows as spread, not in the best).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

VERBS = ("", "demo", "train", "pretrain", "evaluate", "predict", "rank-sources", "rank-models", "adapt-speech", "tabular",
         "card", "push", "export")


def best_of(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def saved_text_model(work: Path) -> tuple[Path, Path]:
    """A MiniLM-L6 probe trained for one epoch on 48 fortunes, and its export (built once, reused)."""
    model_dir, export = work / "run" / "model", work / "export"
    if not (export / "config.json").is_file():
        import mtransfer as mt
        from mtransfer.builtins import DATA
        from mtransfer.export import export_transformers

        rows = DATA["builtin:fortunes"].splits()["train"][:48]
        data = mt.load_labeled(rows)
        model = mt.TransferModel.from_backbone("text", "builtin:minilm", labels=data.label_names, seed=0, max_length=64)
        args = mt.TrainingArguments(output_dir=str(work / "run"), strategy="frozen", num_epochs=1, learning_rate=5e-3,
                                    progress_bar=False, report_to=[], plot=False, save_checkpoints="none")
        mt.Trainer(model, args, data).train()
        export_transformers(mt.TransferModel.from_pretrained(str(model_dir)), export)
    return model_dir, export


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work-dir", default="/tmp/bench_cli")
    a = p.parse_args()
    cli = str(Path(sys.executable).with_name("mtransfer"))
    bare = best_of([sys.executable, "-c", "pass"], a.repeats)
    print(f"bare python start: {bare:.3f}s\n\n| command | seconds | x bare start | target < 1 s |\n|---|---|---|---|")
    for argv in [[verb, "--help"] if verb else ["--help"] for verb in VERBS] + [["modalities"]]:
        seconds = best_of([cli, *argv], a.repeats)
        print(f"| mtransfer {' '.join(argv)} | {seconds:.2f} | {seconds / bare:.1f} | {'ok' if seconds < 1 else 'MISSED'} |")
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model_dir, export = saved_text_model(work)
    texts = work / "texts.txt"
    texts.write_text("A journey of a thousand miles begins with a single step.\nThe computer is down again.\n")
    predict = best_of([cli, "predict", "--model-dir", str(model_dir), "--input", str(texts)], a.repeats)
    code = ("from transformers import pipeline\n"
            f"p = pipeline('text-classification', model={str(export)!r}, trust_remote_code=True)\n"
            f"print(p(open({str(texts)!r}).read().splitlines()))")
    pipe = best_of([sys.executable, "-c", code], a.repeats)
    print(f"\n| load a saved text model and classify 2 texts | seconds |\n|---|---|\n"
          f"| mtransfer predict --model-dir | {predict:.2f} |\n| transformers.pipeline(export) | {pipe:.2f} |\n"
          f"| ratio | {predict / pipe:.2f} |")


if __name__ == "__main__":
    main()
