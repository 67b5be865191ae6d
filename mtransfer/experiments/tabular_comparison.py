"""Does a table gain from deep features? Cross-validated comparison of a table's columns, backbone features of its
text / media columns, and both (``mtransfer tabular``).

The library part is :class:`mtransfer.tabular.TabularModel`; this experiment fits it per fold.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtransfer.atomic import atomic_write_bytes, atomic_write_json
from mtransfer.tabular import TabularModel, check_target_not_a_feature, score_predictions


def compare(frame: Any, target: str, task: str = "regression", *, text_columns: Sequence[str] = (),
            image_columns: Sequence[str] = (), audio_columns: Sequence[str] = (), numeric_columns: Sequence[str] = (),
            categorical_columns: Sequence[str] = (), folds: int = 5, seed: int = 0, where: str = "table",
            **settings: Any) -> list[dict[str, Any]]:
    """Cross-validated comparison: the table's columns only, the deep features only, both.

    The backbone features of the whole table are extracted once (cached) and every fold reads
    its rows; each fold fits its own PCA and booster on its training rows. Returns one row per
    variant: mean and standard deviation over the folds of each metric (RMSE / MAE / R² or
    accuracy / macro F1), the booster's mean fit seconds, and the extraction seconds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    media = {"text_columns": list(text_columns), "image_columns": list(image_columns), "audio_columns": list(audio_columns)}
    table = {"numeric_columns": list(numeric_columns), "categorical_columns": list(categorical_columns)}
    if target not in frame.columns:
        raise ValueError(f"no target column {target!r}; the columns are {', '.join(map(str, frame.columns[:20]))}.")
    check_target_not_a_feature(target, {**media, **table})
    frame = frame.reset_index(drop=True)
    y = frame[target]
    both = TabularModel(task, **media, **table, seed=seed, **settings)
    both._check(frame, where, y)
    start = time.perf_counter()
    features = both.column_features(frame, where=where) if any(media.values()) else {}
    extraction = time.perf_counter() - start
    variants = {"columns only": {**table}, "deep features only": {**media}, "both": {**media, **table}}
    variants = {k: v for k, v in variants.items() if any(v.values())}
    splitter = (StratifiedKFold if task == "classification" else KFold)(folds, shuffle=True, random_state=seed)
    results = []
    for name, columns in variants.items():
        per_fold, fit_seconds = [], []
        for train_idx, test_idx in splitter.split(frame, y if task == "classification" else None):
            model = TabularModel(task, **columns, seed=seed, **settings)
            part = {c: x[train_idx] for c, x in features.items()}
            model.fit(frame.iloc[train_idx], y.iloc[train_idx], features=part)
            fit_seconds.append(model.timings["fit_s"])
            pred = model.predict(frame.iloc[test_idx], features={c: x[test_idx] for c, x in features.items()})
            per_fold.append(score_predictions(task, y.iloc[test_idx].to_numpy(), pred))
        row: dict[str, Any] = {"variant": name}
        for metric in per_fold[0]:
            values = np.array([f[metric] for f in per_fold])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        row["fit_s"] = float(np.mean(fit_seconds))
        row["extraction_s"] = extraction if name != "columns only" else 0.0
        results.append(row)
    return results


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`compare`'s rows (mean ± standard deviation over folds)."""
    metrics = [k for k in rows[0] if k not in ("variant", "fit_s", "extraction_s") and not k.endswith("_std")]
    lines = ["| variant | " + " | ".join(metrics) + " | booster fit (s) | feature extraction (s) |",
             "|---" * (len(metrics) + 3) + "|"]
    for r in rows:
        cells = [f"{r[m]:.3f} ± {r[m + '_std']:.3f}" for m in metrics]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['fit_s']:.2f} | {r['extraction_s']:.1f} |")
    return "\n".join(lines)


def run_comparison(frame: Any, target: str, task: str, columns: dict[str, Sequence[str]], output_dir: str | os.PathLike,
                   *, folds: int = 5, seed: int = 0, test: Any = None, where: str = "table",
                   test_where: str = "test table", **settings: Any) -> dict[str, Any]:
    """:func:`compare`, then the ``both`` model fitted on every row, saved, and scored on ``test`` when given.

    Writes ``comparison.json`` (every fold-averaged figure, and the test scores) and
    ``comparison.md`` into ``output_dir``, and the fitted model into ``output_dir/model`` (not for
    ``booster='hist'``, which has no native format). The test table is checked before the
    cross-validation starts.
    """
    check_target_not_a_feature(target, columns)
    final = TabularModel(task, **columns, seed=seed, target=target, **settings)
    if target not in frame.columns:
        raise ValueError(f"{where}: no target column {target!r}; the columns are {', '.join(map(str, frame.columns[:20]))}.")
    if test is not None:
        final._check(test, test_where, test[target] if target in test.columns else None)
    rows = compare(frame, target, task, folds=folds, seed=seed, where=where, **columns, **settings)
    final.fit(frame, frame[target], where=where)
    out = Path(output_dir)
    if final.booster != "hist":
        final.save(out / "model")
    result: dict[str, Any] = {"cross_validation": rows, "rows": len(frame), "folds": folds, "target": target,
                              "task": task, "columns": {k: list(v) for k, v in columns.items()},
                              "booster_params": final.chosen_params}
    if test is not None:
        result["test"] = score_predictions(task, test[target].to_numpy(), final.predict(test, where=test_where))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", result)
    atomic_write_bytes(out / "comparison.md", (comparison_table(rows) + "\n").encode())
    return result
