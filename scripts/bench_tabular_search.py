"""The tabular booster's settings: columns-only R² on the Debian package table, three ways, measured in one run.

5-fold cross-validation (the same folds for all) of a model on the table's numeric and categorical
columns only (target ``log_installed_size``):

* **fixed**: ``TabularModel(search=False)``, the earlier default (LightGBM, 31 leaves, 5 rows per leaf,
  learning rate 0.05, early stopping on 15 % of the training rows);
* **searched**: ``TabularModel()``, today's default: the small grid of ``SEARCH_GRIDS`` (10 fits),
  the best on the same validation part;
* **hand-tuned LightGBM**: outside mtransfer, scikit-learn's ``GridSearchCV`` (3-fold, inside each
  training fold) over a larger grid (num_leaves, min_child_samples, learning_rate, colsample_bytree,
  reg_lambda: 144 settings) with 400 rounds, refitted on the whole training fold: what a user tuning
  LightGBM by hand would do.

Reports R² (mean ± sd over folds) and seconds per fold, with ``--num-threads`` threads for every booster.

    .venv/bin/python scripts/bench_tabular_search.py [--rows 3000] [--folds 5] [--num-threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    import lightgbm as lgb
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GridSearchCV, KFold

    from mtransfer.builtins.debian_packages import CATEGORICAL, NUMERIC, packages_table
    from mtransfer.tabular import TabularModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--num-threads", type=int, default=2)
    a = ap.parse_args()
    frame = packages_table(limit=a.rows, seed=0)
    target = "log_installed_size"
    columns = dict(numeric_columns=NUMERIC, categorical_columns=CATEGORICAL)
    folds = list(KFold(a.folds, shuffle=True, random_state=0).split(frame))
    grid = {"num_leaves": [7, 15, 31, 63], "min_child_samples": [5, 20, 50], "learning_rate": [0.03, 0.1],
            "colsample_bytree": [0.7, 1.0], "reg_lambda": [0.0, 1.0, 10.0]}
    results: dict[str, dict] = {}

    def run(name, fit_predict):
        scores, seconds, extra = [], [], []
        for tr, te in folds:
            start = time.perf_counter()
            pred, info = fit_predict(frame.iloc[tr], frame.iloc[te])
            seconds.append(time.perf_counter() - start)
            scores.append(r2_score(frame[target].iloc[te], pred))
            extra.append(info)
        results[name] = {"r2_mean": round(float(np.mean(scores)), 4), "r2_sd": round(float(np.std(scores)), 4),
                         "seconds_per_fold": round(float(np.mean(seconds)), 1), "chosen": extra}
        print(json.dumps({name: results[name]}), flush=True)

    def mtransfer_model(search):
        def fit_predict(train, test):
            m = TabularModel("regression", search=search, num_threads=a.num_threads, progress=False, **columns)
            m.fit(train, train[target])
            return m.predict(test), m.chosen_params
        return fit_predict

    def hand_tuned(train, test):
        X, Xt = train[NUMERIC + CATEGORICAL].copy(), test[NUMERIC + CATEGORICAL].copy()
        for c in CATEGORICAL:
            cats = X[c].astype("category").cat.categories
            X[c] = X[c].astype(pd_category(cats))
            Xt[c] = Xt[c].where(Xt[c].isin(cats)).astype(pd_category(cats))  # unseen categories: missing
        search = GridSearchCV(lgb.LGBMRegressor(n_estimators=400, random_state=0, verbose=-1, n_jobs=a.num_threads),
                              grid, cv=3, scoring="r2", n_jobs=1)
        search.fit(X, train[target])
        return search.predict(Xt), search.best_params_

    run("fixed (earlier default)", mtransfer_model(False))
    run("searched (default)", mtransfer_model(True))
    run("hand-tuned LightGBM (GridSearchCV, 144 settings)", hand_tuned)
    print(f"\n{len(frame)} rows, {a.folds}-fold CV, columns only (numeric + categorical), R² of {target}:\n")
    print("| model | R² (mean ± sd over folds) | seconds per fold |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['r2_mean']:.3f} ± {r['r2_sd']:.3f} | {r['seconds_per_fold']} |")


def pd_category(categories):
    import pandas as pd

    return pd.CategoricalDtype(categories)


if __name__ == "__main__":
    main()
