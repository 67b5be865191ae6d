"""Deep features beside tabular columns: gradient boosting, categorical columns, saving without pickle, bad input."""

import numpy as np
import pandas as pd
import pytest

from mtransfer.tabular import TabularModel
from tests.tiny import TOPICS


@pytest.fixture()
def houses(topic_data):
    """A table whose price depends on a numeric column, a categorical one and the topic of the text."""
    rows = topic_data[0] + topic_data[1]
    rng = np.random.default_rng(0)
    area = rng.uniform(40, 160, len(rows))
    city = rng.choice(["north", "south", "east"], len(rows))
    topic = np.array([list(TOPICS).index(r["label"]) for r in rows])
    price = 2000 * area + np.select([city == "north", city == "south"], [90000, -60000], 0) + 70000 * topic
    return pd.DataFrame({"description": [r["text"] for r in rows], "area": area, "city": city,
                         "price": price + rng.normal(0, 5000, len(rows)), "topic": [r["label"] for r in rows]})


def make(tiny_bert, tmp_path, task="regression", **kw):
    settings = dict(text_columns=["description"], numeric_columns=["area"], categorical_columns=["city"],
                    text_model=("text", str(tiny_bert)), dim=8, cache_dir=str(tmp_path / "cache"), progress=False,
                    n_estimators=300, learning_rate=0.1, early_stopping_rounds=30)
    settings.update(kw)
    return TabularModel(task, **settings)


def test_regression_in_the_targets_units_categorical_columns_native_and_saved_without_pickle(tiny_bert, houses, tmp_path, text_backbone_calls):
    train, test = houses.iloc[:120], houses.iloc[120:]
    model = make(tiny_bert, tmp_path).fit(train, train["price"])
    pred = model.predict(test)
    rmse = float(np.sqrt(np.mean((pred - test["price"].to_numpy()) ** 2)))
    assert rmse < 0.75 * test["price"].std()  # in the target's units, and better than the mean (1.0)
    assert model._model.pandas_categorical == [["east", "north", "south"]]  # city reached LightGBM as a category
    assert model._matrix(test.reset_index(drop=True), fit=False)["city"].dtype.name == "category"
    folder = model.save(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["booster.txt", "projections.safetensors", "tabular.json"]
    again = TabularModel.load(folder, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.predict(test), pred)


def test_classification_and_hist_booster(tiny_bert, houses, tmp_path, text_backbone_calls):
    train, test = houses.iloc[:120], houses.iloc[120:]
    model = make(tiny_bert, tmp_path, task="classification", numeric_columns=[], categorical_columns=[]).fit(train, train["topic"])
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), len(TOPICS)) and np.allclose(proba.sum(1), 1)
    assert set(model.predict(test)) <= set(TOPICS)
    again = TabularModel.load(model.save(tmp_path / "c"), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.predict_proba(test), proba)
    hist = make(tiny_bert, tmp_path, booster="hist").fit(train, train["price"])
    assert hist.predict(test).shape == (len(test),)
    with pytest.raises(ValueError, match="no native file format"):
        hist.save(tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_bad_tables_are_named_before_extraction(tiny_bert, houses, tmp_path, text_backbone_calls):
    model = make(tiny_bert, tmp_path)
    with pytest.raises(ValueError, match=r"training table: no column 'area'; the columns are description, city"):
        model.fit(houses.drop(columns=["area"]), houses["price"])
    bad = houses.copy()
    bad["area"] = bad["area"].astype(object)
    bad.loc[7, "area"] = "large"
    with pytest.raises(ValueError, match=r"column 'area' should be numeric; 1 values are not numbers \(row 7: 'large'\)"):
        model.fit(bad, bad["price"])
    gaps = houses["price"].copy()
    gaps.iloc[[3, 9]] = np.nan
    with pytest.raises(ValueError, match=r"the target has 2 missing values \(rows 3, 9\)"):
        model.fit(houses, gaps)
    with pytest.raises(ValueError, match="columns given twice: area"):
        make(tiny_bert, tmp_path, categorical_columns=["area"])
    assert text_backbone_calls["n"] == 0  # nothing was extracted


def test_the_three_way_comparison_extracts_once_and_reports_every_fold(tiny_bert, houses, tmp_path, text_backbone_calls):
    from mtransfer.tabular import compare, comparison_table

    rows = compare(houses, "price", text_columns=["description"], numeric_columns=["area"],
                   categorical_columns=["city"], folds=3, text_model=("text", str(tiny_bert)), dim=8,
                   cache_dir=str(tmp_path / "cache"), progress=False, n_estimators=200, learning_rate=0.1,
                   early_stopping_rounds=20)
    assert [r["variant"] for r in rows] == ["columns only", "deep features only", "both"]
    extraction = text_backbone_calls["n"]
    assert extraction == -(-len(houses) // 32)  # one pass over the table, batches of 32; no fold extracts again
    by = {r["variant"]: r for r in rows}
    # price = area + city + topic: the columns explain most of it, the text adds the topic
    assert by["both"]["rmse"] < by["columns only"]["rmse"] and by["both"]["rmse"] < by["deep features only"]["rmse"]
    assert all(r["rmse_std"] > 0 and r["fit_s"] > 0 for r in rows)
    table = comparison_table(rows)
    assert table.splitlines()[0].startswith("| variant | rmse | mae | r2 |") and " ± " in table


def test_cli_compares_saves_and_scores_a_test_table(tiny_bert, houses, tmp_path, capsys, text_backbone_calls):
    import json

    from mtransfer.cli import main

    houses.iloc[:150].to_csv(tmp_path / "train.csv", index=False)
    houses.iloc[150:].to_csv(tmp_path / "test.csv", index=False)
    args = ["tabular", "--train", str(tmp_path / "train.csv"), "--target", "price", "--text-column", "description",
            "--numeric-column", "area", "--categorical-column", "city", "--text-model", f"text:{tiny_bert}",
            "--dim", "8", "--folds", "3", "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert main(args + ["--test", str(tmp_path / "test.csv")]) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation on 150 rows" in out and "| both |" in out and "test: {\"rmse\":" in out
    saved = TabularModel.load(tmp_path / "out" / "model")
    assert saved.predict(houses.iloc[150:]).shape == (len(houses) - 150,)
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["rows"] == 150
    assert main([*args[:4], "pricee", *args[5:]]) == 2
    assert "--target 'pricee': no such column" in capsys.readouterr().err


def test_the_debian_package_table_parses_continuations_and_counts_dependencies():
    import math
    import shutil

    from mtransfer.builtins.debian_packages import _records, packages_table

    text = ("Package: a\nInstalled-Size: 99\nDepends: libc6 (>= 2.34), zlib1g\nDescription: tool A\n"
            "Tag: role::program,\n use::editing\nSection: contrib/utils\n\nPackage: b\nDescription: no size\n")
    records = _records(text)
    assert records[0]["Tag"] == "role::program, use::editing" and records[1]["Package"] == "b"
    if shutil.which("apt-cache") is None:
        pytest.skip("no apt-cache on this machine")
    table = packages_table(limit=50, seed=0)
    assert len(table) == 50 and table["package"].is_unique
    row = table.iloc[0]
    assert row["log_installed_size"] > 0 and isinstance(row["description"], str) and "/" not in row["section"]
    assert math.isfinite(table["n_depends"].sum())
