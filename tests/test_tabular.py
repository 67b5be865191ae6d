"""Deep features beside tabular columns: gradient boosting, categorical columns, saving without pickle, bad input."""

from pathlib import Path

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
    from mtransfer.experiments.tabular_comparison import compare, comparison_table

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
    assert f"--train {tmp_path / 'train.csv'}: no target column 'pricee'" in capsys.readouterr().err


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


@pytest.fixture()
def photo_table(houses, shape_data, tmp_path):
    """The houses table with a column of image files (PNG, the shape images)."""
    from PIL import Image

    images = [r["image"] for r in shape_data[0] + shape_data[1]]
    paths = []
    for i in range(len(houses)):
        path = tmp_path / "photos" / f"house_{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(images[i % len(images)]).save(path)
        paths.append(str(path))
    return houses.assign(photo=paths)


def test_missing_and_broken_media_files_are_named_before_any_column_is_extracted(tiny_bert, tiny_vision, photo_table,
                                                                                 tmp_path, text_backbone_calls):
    table = photo_table.copy()
    (tmp_path / "photos" / "house_004.png").unlink()
    (tmp_path / "photos" / "house_011.png").write_bytes(b"not a png")
    model = make(tiny_bert, tmp_path, image_columns=["photo"], image_model=("image", str(tiny_vision("vit"))))
    with pytest.raises(ValueError) as err:
        model.fit(table, table["price"])
    message = str(err.value)
    assert "training table, column 'photo'" in message and "2 of 207 inputs cannot be read" in message
    assert "row 4: " in message and "house_004.png" in message and "row 11: " in message and "house_011.png" in message
    # the text column comes first, but every column's files are checked before any column is extracted
    assert text_backbone_calls["n"] == 0
    table.loc[5, "photo"] = None
    with pytest.raises(ValueError, match=r"column 'photo' has 1 missing values \(rows 5\)"):
        model.fit(table, table["price"])


def test_an_image_column_beside_the_columns(tiny_bert, tiny_vision, photo_table, tmp_path):
    train, test = photo_table.iloc[:120], photo_table.iloc[120:]
    model = make(tiny_bert, tmp_path, text_columns=[], image_columns=["photo"],
                 image_model=("image", str(tiny_vision("vit")))).fit(train, train["price"])
    assert [c for c in model.columns_ if c.startswith("photo__")] == [f"photo__f{i}" for i in range(8)]
    again = TabularModel.load(model.save(tmp_path / "saved"), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


def test_digit_scan_measures():
    from mtransfer.builtins.digit_scans import MEASURES, scan_measures

    ring = np.zeros((8, 8))
    ring[1:7, 2:6] = 16
    ring[3:5, 3:5] = 0  # a zero: one enclosed hole, left-right symmetric, centred
    m = scan_measures(ring)
    assert list(m) == MEASURES
    assert m["holes"] == 1 and m["mirror_match"] == 1.0 and m["height"] == 6 and m["width"] == 4
    assert m["centre_row"] == pytest.approx(3.5) and m["centre_col"] == pytest.approx(3.5) and m["top_share"] == 0.5
    bar = np.zeros((8, 8))
    bar[0:8, 1] = 16  # a one at the left edge: no hole, all ink on the left
    m = scan_measures(bar)
    assert m["holes"] == 0 and m["left_share"] == 1.0 and m["mirror_match"] == 0.0 and m["ink"] == 8


def test_the_digit_scan_table_writes_its_images_once(tmp_path):
    from mtransfer.builtins.digit_scans import MEASURES, digit_scans_table

    table = digit_scans_table(tmp_path / "scans", limit=20, seed=0)
    assert list(table.columns) == ["image", *MEASURES, "digit"] and len(table) == 20
    first = Path(table["image"][0])
    assert first.is_file() and first.suffix == ".png"
    stamp = first.stat().st_mtime_ns
    again = digit_scans_table(tmp_path / "scans", limit=20, seed=0)
    assert again.equals(table) and first.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "scans").iterdir()) == sorted(Path(p).name for p in table["image"])


def test_a_builtin_table_brings_its_target_task_columns_and_models():
    from mtransfer.cli import build_parser
    from mtransfer.tabular import tabular_settings

    a = build_parser().parse_args(["tabular", "--train", "builtin:digit-scans"])
    target, task, columns, settings = tabular_settings(a)
    assert (target, task, columns["image_columns"]) == ("digit", "classification", ["image"])
    assert "holes" in columns["numeric_columns"] and settings["image_model"] == ("torch", "builtin:efficientnet-lite0")
    a = build_parser().parse_args(["tabular", "--train", "builtin:debian-packages", "--numeric-column", "n_tags"])
    target, task, columns, _ = tabular_settings(a)
    assert (target, task, columns["numeric_columns"], columns["text_columns"]) == ("log_installed_size", "regression",
                                                                                     ["n_tags"], [])
    a = build_parser().parse_args(["tabular", "--train", "table.csv"])
    with pytest.raises(ValueError, match="--target: which column to predict"):
        tabular_settings(a)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_tabular_recipe_extracts_on_two_processes_then_compares(tiny_bert, houses, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from mtransfer.cache import FeatureCache
    from tests.test_multiprocess import ROOT, free_port, launch_report

    houses.to_csv(tmp_path / "train.csv", index=False)
    out, cache = tmp_path / "out", tmp_path / "cache"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(free_port()), str(ROOT / "recipes/tabular.py"), "--train", str(tmp_path / "train.csv"),
           "--target", "price", "--text-column", "description", "--numeric-column", "area", "--categorical-column", "city",
           "--text-model", f"text:{tiny_bert}", "--dim", "8", "--folds", "3", "--output-dir", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MTRANSFER_CACHE": str(cache)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, launch_report(proc)
    assert proc.stdout.count("3-fold cross-validation on 207 rows") == 1  # the main process compares, once
    assert json.loads((out / "comparison.json").read_text())["rows"] == 207
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1  # one column, extracted once by both processes together, read by every fold
    assert sorted(p.name for p in entries[0].glob("shard_*")) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    from mtransfer.adapters import TextAdapter

    one = FeatureCache(tmp_path / "one").features(TextAdapter(str(tiny_bert)), houses["description"].tolist(), batch_size=32)
    from mtransfer.sklearn import SHARD_ROWS

    cached = FeatureCache(cache, shard_size=SHARD_ROWS)
    two = cached.lookup(cached.key(TextAdapter(str(tiny_bert)), houses["description"].tolist()))
    assert two is not None and np.allclose(one.all().numpy(), two.all().numpy(), atol=1e-5)


def test_cli_refuses_the_target_or_a_column_named_after_it_as_a_feature(houses, tmp_path, capsys):
    """On the earlier main, --numeric-column price beside --target price trained on the target (columns-only R² 0.907)."""
    from mtransfer.cli import main

    table = houses.assign(price_log=np.log(houses["price"].abs() + 1))
    table.to_csv(tmp_path / "train.csv", index=False)
    base = ["tabular", "--train", str(tmp_path / "train.csv"), "--target", "price", "--numeric-column", "area",
            "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert main([*base, "--numeric-column", "price"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mtransfer tabular: error: column 'price' (numeric) is the target: a model that reads its own "
                   "target learns nothing it can use. Leave it out of the feature columns.")
    assert main([*base, "--numeric-column", "price_log"]) == 2
    assert "column 'price_log' (numeric) is named after the target 'price'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="column 'price' \\(numeric\\) is the target"):
        TabularModel("regression", numeric_columns=["area", "price"]).fit(houses, houses["price"])


@pytest.fixture()
def saved_table_model(houses, tmp_path):
    model = TabularModel("regression", numeric_columns=["area"], categorical_columns=["city"], n_estimators=50,
                         progress=False)
    return model.fit(houses, houses["price"]).save_pretrained(tmp_path / "saved")


def test_opening_a_tabular_folder_imports_nothing_it_names(saved_table_model, tmp_path, monkeypatch):
    """On the earlier main, tabular.json's backbones ["torch", "this:s"] imported a module and ["torch", "os:abort"] called one."""
    import json
    import sys

    marker = tmp_path / "imported.marker"
    (tmp_path / "evil_tabular_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef s(**kw):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec_path = saved_table_model / "tabular.json"
    spec = json.loads(spec_path.read_text())
    spec["media"]["image"] = ["numbers"]
    spec["backbones"]["image"] = ["torch", "evil_tabular_module:s"]
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ValueError) as err:
        TabularModel.from_pretrained(saved_table_model)
    assert str(err.value) == (f"{spec_path}: backbones.image names 'evil_tabular_module:s', an import path: opening the "
                              "model would import and call that code. Load it with trust_remote_code=True "
                              "(--trust-remote-code) only if you trust the folder.")
    assert not marker.exists() and "evil_tabular_module" not in sys.modules
    # the CLI's predict says the same in one line
    from mtransfer.cli import main

    houses_csv = tmp_path / "rows.csv"
    pd.DataFrame({"area": [50.0], "city": ["north"], "numbers": ["x.png"]}).to_csv(houses_csv, index=False)
    assert main(["predict", "--model-dir", str(saved_table_model), "--input", str(houses_csv)]) == 2
    assert not marker.exists()
    spec["backbones"]["image"] = None
    spec["media"]["image"] = []
    spec["booster_file"] = "../../../etc/passwd"
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="names the file '../../../etc/passwd', which lies outside the model folder"):
        TabularModel.from_pretrained(saved_table_model)
    spec_path.write_text('{"format": 1, "task": ')
    with pytest.raises(ValueError, match="tabular.json: not valid JSON .*the tabular model spec is damaged"):
        TabularModel.from_pretrained(saved_table_model)
    spec_path.write_text(json.dumps({**spec, "format": 99}))
    with pytest.raises(ValueError, match="format 99 was written by a newer mtransfer; this version reads format 1"):
        TabularModel.from_pretrained(saved_table_model)


def test_predict_and_evaluate_take_a_tabular_model_folder(saved_table_model, houses, tmp_path, capsys):
    """On the earlier main, predict --model-dir TABLE_MODEL said "no config.json"."""
    import json

    from mtransfer.cli import main

    houses.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", "--model-dir", str(saved_table_model), "--input", str(tmp_path / "rows.csv")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = TabularModel.from_pretrained(saved_table_model)
    np.testing.assert_allclose([r["prediction"] for r in rows], model.predict(houses))
    assert model.target == "price"
    assert main(["evaluate", "--model-dir", str(saved_table_model), "--data", str(tmp_path / "rows.csv")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    truth, pred = houses["price"].to_numpy(), model.predict(houses)
    assert metrics["eval_samples"] == len(houses)
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((truth - pred) ** 2))))


def test_the_tabular_task_takes_the_heads_name_too():
    from mtransfer.tabular import HEAD_TASKS

    assert TabularModel("single_label_classification", numeric_columns=["a"]).task == "classification"
    assert set(HEAD_TASKS) == {"regression", "classification"}
    with pytest.raises(ValueError, match="expected one of regression, classification \\(or single_label_classification\\)"):
        TabularModel("ctc", numeric_columns=["a"])


def test_read_table_takes_relative_media_paths_against_the_tables_folder(tmp_path, monkeypatch):
    from mtransfer.tabular import read_table

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("image,note,y\nimg/a.png,see b.png,1\n/abs/b.png,plain,2\n")
    monkeypatch.chdir(tmp_path)
    frame = read_table("data/t.csv")
    assert frame["image"].tolist() == [str(tmp_path / "data" / "img" / "a.png"), "/abs/b.png"]
    assert frame["note"].tolist() == ["see b.png", "plain"] and frame["y"].tolist() == [1, 2]


def test_booster_settings_are_checked_by_name_and_searched_when_none_given(houses, tmp_path):
    from mtransfer.tabular import SEARCH_GRIDS

    train, valid = houses.iloc[:120], houses.iloc[120:]
    cols = dict(numeric_columns=["area"], categorical_columns=["city"], progress=False, n_estimators=200,
                early_stopping_rounds=20)
    searched = TabularModel("regression", **cols).fit(train, train["price"])
    grid = SEARCH_GRIDS["lightgbm"]
    assert len(searched.search_scores) == len(grid) and searched.chosen_params in grid
    best = min(searched.search_scores, key=lambda r: r["cv_loss"])
    assert searched.chosen_params == {k: best[k] for k in grid[0]}
    given = TabularModel("regression", booster_params={"num_leaves": 4, "min_data_in_leaf": 30}, **cols)
    given.fit(train, train["price"])
    assert given.search_scores == [] and given.chosen_params == {"num_leaves": 4, "min_data_in_leaf": 30}
    assert given._model.params["num_leaves"] == 4  # reached LightGBM (and min_child_samples=5 did not override)
    assert all(t["num_leaves"] <= 4 for t in given._model.dump_model()["tree_info"])
    fixed = TabularModel("regression", search=False, **cols).fit(train, train["price"])
    assert fixed.chosen_params == {} and fixed._model.params["num_leaves"] == 31
    given.save(tmp_path / "m")
    assert TabularModel.load(tmp_path / "m").chosen_params == {"num_leaves": 4, "min_data_in_leaf": 30}
    np.testing.assert_allclose(TabularModel.load(tmp_path / "m").predict(valid), given.predict(valid))
    with pytest.raises(ValueError, match="booster setting 'num_leafs': lightgbm has no such parameter; did you mean "
                                         "num_leaf, num_leaves"):
        TabularModel("regression", booster_params={"num_leafs": 8}, **cols)
    with pytest.raises(ValueError, match="booster setting 'n_estimators' is set by mtransfer itself"):
        TabularModel("regression", booster_params={"n_estimators": 8}, **cols)
    with pytest.raises(ValueError, match="booster setting 'max_leaf_node': hist has no such parameter; did you mean "
                                         "max_leaf_nodes"):
        TabularModel("regression", booster="hist", booster_params={"max_leaf_node": 8}, **cols)


def test_cli_tabular_threads_and_booster_params(houses, tmp_path, capsys, monkeypatch):
    import json

    import lightgbm as lgb

    from mtransfer.cli import main

    seen = []
    real = lgb.LGBMRegressor.fit

    def spy(self, *args, **kw):
        seen.append(self.get_params())
        return real(self, *args, **kw)

    monkeypatch.setattr(lgb.LGBMRegressor, "fit", spy)
    houses.to_csv(tmp_path / "train.csv", index=False)
    args = ["tabular", "--train", str(tmp_path / "train.csv"), "--target", "price", "--numeric-column", "area",
            "--categorical-column", "city", "--folds", "2", "--output-dir", str(tmp_path / "out"), "--no-progress",
            "--num-threads", "1"]
    assert main(args + ["--booster-param", "num_leaves=6", "--booster-param", "min_data_in_leaf=12"]) == 0
    assert seen and all(kw["n_jobs"] == 1 and kw["num_leaves"] == 6 and kw["min_data_in_leaf"] == 12 for kw in seen)
    result = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert result["booster_params"] == {"num_leaves": 6, "min_data_in_leaf": 12}
    capsys.readouterr()
    assert main(args + ["--booster-param", "leaves=6"]) == 2
    assert "--booster-param: booster setting 'leaves': lightgbm has no such parameter" in capsys.readouterr().err
    assert main(args + ["--booster-param", "num_leaves"]) == 2
    assert "--booster-param 'num_leaves': expected KEY=VALUE" in capsys.readouterr().err
