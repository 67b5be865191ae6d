"""mtransfer.adapters.base: the adapter contract, its registry and the settings check every entry point uses."""

import pytest

from mtransfer.adapters.base import (ADAPTERS, Adapter, adapter_settings, build_adapter, check_adapter_settings,
                                     get_adapter_class, list_modalities)


def test_the_registry_is_the_one_list_of_modalities():
    assert list_modalities()[:6] == ["text", "sentence", "static_vectors", "image", "torch", "audio"]
    for name in list_modalities():
        cls = get_adapter_class(name)
        assert issubclass(cls, Adapter) and cls.modality == name == cls.adapter_type and cls.summary
    assert set(list_modalities()) == set(ADAPTERS)  # every one registered once its module loaded, none besides
    with pytest.raises(ValueError, match="Unknown adapter type 'txet'; expected one of audio, image"):
        get_adapter_class("txet")


def test_settings_are_checked_against_the_constructor_with_a_suggestion():
    allowed, takes_any = adapter_settings("text")
    assert {"max_length", "pooling"} <= set(allowed) and not takes_any
    check_adapter_settings("text", ["max_length", "pooling"], "here")
    with pytest.raises(ValueError, match=r"here: unknown key model.adapter.max_lenght for the text adapter \(did you "
                                         r"mean model.adapter.max_length\?\)"):
        check_adapter_settings("text", ["max_lenght"], "here", prefix="model.adapter.")


def test_build_adapter_builds_the_registered_adapter_with_its_settings(tiny_bert):
    adapter = build_adapter("text", str(tiny_bert), max_length=16)
    assert adapter.modality == "text" and adapter.max_length == 16 and adapter.model_name_or_path == str(tiny_bert)
