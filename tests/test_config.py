"""mtransfer.config: recipe configs and key=value overrides, checked key by key and typed, before anything loads."""

import pytest

from mtransfer.config import load_recipe_config
from tests.test_recipes import CONFIGS


def test_overrides_are_typed_and_nested(tmp_path):
    text_config = next(c for c in CONFIGS if "/text/" in str(c))
    config = load_recipe_config(text_config, ["training.num_epochs=2", "training.learning_rate=3e-4",
                                             "model.adapter.max_length=32", "data.test=null", "training.report_to=[]"])
    assert config.training.num_epochs == 2 and config.training.learning_rate == 3e-4
    assert config.model.adapter["max_length"] == 32 and config.data.test is None and config.training.report_to == []


@pytest.mark.parametrize("override,message", [
    (["training.num_epoch=2"], r"unknown key training.num_epoch; did you mean training.num_epochs"),
    (["training.num_epochs=two"], r"training.num_epochs is 'two' \(str\); expected int"),
    (["model.modality=[1]"], r"model.modality is \[1\] \(list\); expected str"),
    (["optimizer.lr=1"], r"must start with one of model, data, training"),
    (["training.strategy=melt"], r"TrainingArguments.strategy='melt'"),
])
def test_bad_keys_and_types_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe_config(CONFIGS[0], override)


def test_unknown_section_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\noptimiser: {lr: 1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown section 'optimiser'"):
        load_recipe_config(bad)


def test_a_flag_built_config_sets_trust_remote_code_only_when_asked():
    base = {"model": {"modality": "text", "name_or_path": "x"}, "data": {"train": "t.csv"},
            "training": {"output_dir": "out"}}
    assert load_recipe_config(None, base=base).model.trust_remote_code is False
    assert load_recipe_config(None, ["model.trust_remote_code=true"], base=base).model.trust_remote_code is True


def test_the_input_column_defaults_to_the_modalitys_own():
    """A speech or image config without data.input_column reads the audio / image column, as the train flags do (it
    used to look for 'text' whatever the modality)."""
    speech = next(c for c in CONFIGS if "/speech/" in str(c))
    assert load_recipe_config(speech).data.input_column == "audio"
    assert load_recipe_config(speech, ["data.input_column=wav"]).data.input_column == "wav"
    image = next(c for c in CONFIGS if "/image/" in str(c))
    assert load_recipe_config(image, ["data.input_column=null"]).data.input_column == "image"
    text = next(c for c in CONFIGS if "/text/" in str(c))
    assert load_recipe_config(text).data.input_column == "text"
