"""Backbone features as a scikit-learn transformer (Pipeline, ColumnTransformer, cache, PCA, pandas output)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from mtransfer.sklearn import BackboneFeatures


@pytest.fixture()
def table(topic_data):
    rows = topic_data[0]
    rng = np.random.default_rng(0)
    return pd.DataFrame({"text": [r["text"] for r in rows], "length": [len(r["text"]) for r in rows],
                         "noise": rng.standard_normal(len(rows)), "label": [r["label"] for r in rows]})


def test_parameters_clone_and_shapes(tiny_bert, table, tmp_path, text_backbone_calls):
    est = BackboneFeatures("text", str(tiny_bert), adapter_kwargs={"max_length": 16}, cache_dir=str(tmp_path), progress=False)
    assert clone(est).get_params() == est.get_params()
    assert est.set_params(dim=4).dim == 4
    out = est.fit_transform(table[["text"]])
    assert out.shape == (len(table), 4) and out.dtype == np.float32
    assert list(est.get_feature_names_out()) == [f"text_pc{i}" for i in range(4)]
    whole = BackboneFeatures("text", str(tiny_bert), adapter_kwargs={"max_length": 16}, cache_dir=str(tmp_path),
                             progress=False).fit(table["text"])
    assert whole.n_features_out_ == 32 and whole.transform(table["text"].tolist()).shape == (len(table), 32)
    assert whole.get_feature_names_out()[0] == "text_dim0"
    with pytest.raises(ValueError, match="dim=1000: at most"):
        clone(est).set_params(dim=1000).fit(table["text"])


def test_in_a_column_transformer_and_pipeline_with_pandas_output_and_each_input_extracted_once(tiny_bert, table,
                                                                                              tmp_path, text_backbone_calls):
    features = BackboneFeatures("text", str(tiny_bert), adapter_kwargs={"max_length": 16}, dim=8,
                                cache_dir=str(tmp_path), progress=False)
    columns = ColumnTransformer([("emb", features, ["text"]), ("num", "passthrough", ["length", "noise"])])
    pipe = make_pipeline(columns, LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, table, table["label"], cv=3)
    first = text_backbone_calls["n"]
    assert first > 0 and scores.mean() > 0.6  # the topics are learnable from the text
    cross_val_score(pipe, table, table["label"], cv=3)  # the same folds again: every row is in the cache
    assert text_backbone_calls["n"] == first
    columns.set_output(transform="pandas")
    frame = columns.fit_transform(table)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:2]) == ["emb__text_pc0", "emb__text_pc1"] and list(frame.columns[-2:]) == ["num__length", "num__noise"]


def test_missing_values_are_named_before_extraction(tiny_bert, table, tmp_path, text_backbone_calls):
    bad = table.copy()
    bad.loc[3, "text"] = None
    with pytest.raises(ValueError, match=r"column 'text' has 1 missing values \(rows 3\)"):
        BackboneFeatures("text", str(tiny_bert), cache_dir=str(tmp_path), progress=False).fit(bad[["text"]])
    with pytest.raises(ValueError, match="reads one column of inputs; got 2"):
        BackboneFeatures("text", str(tiny_bert), cache_dir=str(tmp_path), progress=False).fit(bad[["text", "length"]])
    assert text_backbone_calls["n"] == 0
