"""Deep features beside tabular columns: what the feature cache saves in a cross-validation, measured in one run.

A 5-fold cross-validation of the "both" model (text features + columns, LightGBM) on the Debian
package table, twice:

* **cached**: the text column's features are extracted once for the whole table (the cache) and
  every fold reads its rows;
* **no cache**: every fold extracts the features of its own training and test rows afresh (an
  empty cache folder per fold), as a pipeline that recomputes features per fit does.

Reports both wall times and their ratio (target >= 4x), and the booster's fit time against the
feature extraction time.

    .venv/bin/python scripts/bench_tabular.py [--rows 2000] [--folds 5] [--text-model sentence:builtin:minilm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def main() -> None:
    from sklearn.model_selection import KFold

    from mtransfer.builtins.debian_packages import CATEGORICAL, NUMERIC, packages_table
    from mtransfer.tabular import TabularModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--text-model", default="sentence:builtin:minilm")
    a = ap.parse_args()
    modality, _, model = a.text_model.partition(":")
    frame = packages_table(limit=a.rows, seed=0)
    columns = dict(text_columns=["description"], numeric_columns=NUMERIC, categorical_columns=CATEGORICAL)
    settings = dict(text_model=(modality, model), dim=32, progress=False)
    target = "log_installed_size"

    folds = list(KFold(a.folds, shuffle=True, random_state=0).split(frame))
    from mtransfer.sklearn import _adapter

    _adapter(modality, model, {})  # load the backbone before either timing: both runs pay only for extraction

    def cross_validate(cache_dir_of_fold, shared: bool) -> dict:
        start = time.perf_counter()
        extraction, fits, features = [], [], None
        if shared:  # one extraction for the table; the folds index it
            t = time.perf_counter()
            features = TabularModel("regression", cache_dir=cache_dir_of_fold(0), **columns, **settings).column_features(frame)
            extraction.append(time.perf_counter() - t)
        for k, (tr, te) in enumerate(folds):
            m = TabularModel("regression", cache_dir=cache_dir_of_fold(k), **columns, **settings)
            part = (lambda idx: {c: x[idx] for c, x in features.items()}) if shared else (lambda idx: None)
            m.fit(frame.iloc[tr], frame[target].iloc[tr], features=part(tr))
            fits.append(m.timings["fit_s"])
            if not shared:
                extraction.append(m.timings["features_s"])
            m.predict(frame.iloc[te], features=part(te))
            if not shared:
                extraction[-1] += m.timings["features_s"]
        return {"seconds": time.perf_counter() - start, "extraction_s": float(np.sum(extraction)),
                "booster_fit_s_per_fold": float(np.mean(fits))}

    with tempfile.TemporaryDirectory() as tmp:
        cached = cross_validate(lambda k: f"{tmp}/shared", shared=True)
        fresh = cross_validate(lambda k: f"{tmp}/fold{k}", shared=False)
    print(json.dumps({
        "rows": len(frame), "folds": a.folds, "text_model": a.text_model,
        "cv_seconds_cached": round(cached["seconds"], 1), "cv_seconds_no_cache": round(fresh["seconds"], 1),
        "speedup_from_cache": round(fresh["seconds"] / cached["seconds"], 1),
        "feature_extraction_s_cached_total": round(cached["extraction_s"], 1),
        "feature_extraction_s_no_cache_total": round(fresh["extraction_s"], 1),
        "booster_fit_s_per_fold": round(cached["booster_fit_s_per_fold"], 2),
        "booster_fit_over_one_extraction": round(cached["booster_fit_s_per_fold"] / cached["extraction_s"], 3),
    }))


if __name__ == "__main__":
    main()
