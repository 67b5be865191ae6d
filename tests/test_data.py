import json
from pathlib import Path

import pytest
import torch

from mtransfer.data import EpochShuffleSampler, load_labeled


def test_csv_file_with_named_columns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,topic\nhello there,greet\nbye now,farewell\nhi,greet\n")
    ds = load_labeled(path, input_column="sentence", label_column="topic")
    assert ds.inputs == ["hello there", "bye now", "hi"]
    assert ds.label_names == ["farewell", "greet"]
    assert ds.targets.tolist() == [1, 0, 1]


def test_jsonl_and_integer_labels_sort_numerically(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 11}) for i in range(22)))
    ds = load_labeled(path)
    assert ds.label_names == [str(i) for i in range(11)]
    assert ds.targets[:3].tolist() == [0, 1, 2]


def test_missing_column_names_file_and_columns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,category\na,x\nb,y\n")
    with pytest.raises(ValueError, match=r"train.csv: no column 'label'; it has columns 'text', 'category'"):
        load_labeled(path)


def test_empty_dataset_and_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty.csv: the file is empty"):
        load_labeled(path)
    with pytest.raises(ValueError, match="the dataset is empty"):
        load_labeled({"text": [], "label": []})


def test_labels_outside_the_label_set_are_named():
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}, {"text": "c", "label": "neg"}]
    with pytest.raises(ValueError, match=r"column 'label' has labels \['meh'\] \(first at row 1\) outside the label set \['neg', 'pos'\]"):
        load_labeled(rows, label_names=["neg", "pos"])


def test_missing_label_and_missing_text():
    with pytest.raises(ValueError, match="column 'label' row 1 has no label"):
        load_labeled([{"text": "a", "label": "x"}, {"text": "b", "label": None}])
    with pytest.raises(ValueError, match="column 'text' row 0 is empty"):
        load_labeled([{"text": None, "label": "x"}, {"text": "b", "label": "y"}])


def test_single_class_is_rejected_for_training():
    with pytest.raises(ValueError, match="single label"):
        load_labeled([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])


def test_multilabel_lists_and_separated_strings():
    ds = load_labeled({"text": ["a", "b", "c"], "tags": [["x", "y"], [], ["z"]]}, label_column="tags",
                      task="multi_label_classification")
    assert ds.label_names == ["x", "y", "z"]
    assert ds.targets.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    ds2 = load_labeled({"text": ["a", "b"], "tags": ["x|y", "z"]}, label_column="tags",
                       task="multi_label_classification", label_separator="|")
    assert ds2.targets.tolist() == [[1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="label_separator"):
        load_labeled({"text": ["a"], "tags": ["x|y"]}, label_column="tags", task="multi_label_classification")


def test_regression_targets_numbers_and_several_columns():
    ds = load_labeled({"text": ["a", "b"], "price": [1.5, "2"], "size": [3, 4]}, label_column=["price", "size"],
                      task="regression")
    assert ds.targets.tolist() == [[1.5, 3.0], [2.0, 4.0]]
    assert ds.label_names == ["price", "size"]
    with pytest.raises(ValueError, match="column 'price' row 1 is 'cheap'; regression targets must be numbers"):
        load_labeled({"text": ["a", "b"], "price": [1.0, "cheap"]}, label_column="price", task="regression")


def test_datasets_dataset_and_unsupported_file(tmp_path):
    import datasets

    ds = load_labeled(datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}))
    assert ds.targets.tolist() == [0, 1]
    bad = tmp_path / "data.xlsx"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"data.xlsx: unsupported file type '.xlsx'"):
        load_labeled(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_labeled(str(tmp_path / "nope" / "x.csv").replace(str(tmp_path), "./nope"))


def test_epoch_shuffle_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert sorted(first) == list(range(50)) and first != second
    b.set_epoch(1)
    assert list(b) == second


def test_subset_keeps_labels():
    ds = load_labeled([{"text": str(i), "label": "ab"[i % 2]} for i in range(6)])
    sub = ds.subset([1, 3])
    assert sub.inputs == ["1", "3"] and sub.targets.tolist() == [1, 1] and sub.label_names == ["a", "b"]
    assert torch.is_tensor(sub.targets)


def test_a_dataframe_with_duplicate_column_names_is_named():
    import pandas as pd

    frame = pd.DataFrame([["a", "x", "b"], ["c", "y", "d"]], columns=["text", "label", "text"])
    with pytest.raises(ValueError, match=r"DataFrame: duplicate column names \['text'\]; rename them"):
        load_labeled(frame)


def test_a_folder_of_class_folders_keeps_every_file_whatever_it_is_called(tmp_path):
    """On the earlier main, datasets' imagefolder took splits from file names: 5 PNGs, two named train-station.png and
    training-day.png, loaded as 2 rows; a class tree holding *-testing.png failed with "Unknown split"."""
    from PIL import Image

    names = ["train-station", "training-day", "valid-point", "dev-notes", "my-testing", "test", "plain"]
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (8, 8), (len(n) * 9, 0, 0)).save(tmp_path / "imgs" / cls / f"{n}.png")
    data = load_labeled(str(tmp_path / "imgs"), input_column="image")
    assert len(data) == 14 and data.label_names == ["cat", "dog"]
    assert sorted(Path(x).name for x in data.inputs) == sorted(f"{n}.png" for n in names for _ in range(2))
    assert [data.label_names[t] for t in data.targets.tolist()] == [Path(x).parent.name for x in data.inputs]
    # a flat folder of 5 files (two named like splits) is one split of 5 unlabelled rows
    (tmp_path / "flat").mkdir()
    for n in names[:5]:
        Image.new("RGB", (8, 8)).save(tmp_path / "flat" / f"{n}.png")
    assert len(load_labeled(str(tmp_path / "flat"), input_column="image", label_column=None)) == 5
    # split folders on top are splits
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "split" / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "split" / split / cls / "train-x.png")
    assert len(load_labeled(str(tmp_path / "split"), input_column="image", split="test")) == 2
    with pytest.raises(ValueError, match="no 'validation' split folder; it has test, train"):
        load_labeled(str(tmp_path / "split"), input_column="image", split="validation")


def test_relative_media_paths_in_a_table_are_relative_to_the_table(tmp_path, monkeypatch):
    """On the earlier main they resolved against the current directory."""
    from PIL import Image

    (tmp_path / "data" / "img").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / "img" / f"{i}.png")
    (tmp_path / "data" / "train.csv").write_text("image,label,note\nimg/0.png,a,see x.png\nimg/1.png,b,plain\n")
    monkeypatch.chdir(tmp_path)  # not the table's folder
    data = load_labeled("data/train.csv", input_column="image")
    assert data.inputs == [str(tmp_path / "data" / "img" / f"{i}.png") for i in range(2)]
    notes = load_labeled("data/train.csv", input_column="note", label_column=None)
    assert notes.inputs == ["see x.png", "plain"]  # a column that is not all paths is left as it is
