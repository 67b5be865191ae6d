"""mtransfer.weight_files: a damaged weights file, or a pickle that holds code, is named in one line."""

import pytest
import torch
from safetensors.torch import save_file

from mtransfer.weight_files import CorruptWeightsError, check_safetensors, load_safetensors, refuse_unsafe_pickles


def test_a_truncated_or_foreign_safetensors_file_is_named(tmp_path):
    save_file({"w": torch.arange(10.0)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_safetensors(tmp_path / "ok.safetensors")["w"], torch.arange(10.0))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    (tmp_path / "text.safetensors").write_text("not weights at all")
    with pytest.raises(CorruptWeightsError, match=r"cut.safetensors: not a readable safetensors file \(truncated"):
        check_safetensors(tmp_path / "cut.safetensors")
    with pytest.raises(CorruptWeightsError, match=r"text.safetensors: not a readable safetensors file"):
        load_safetensors(tmp_path / "text.safetensors")
    with pytest.raises(CorruptWeightsError, match="missing.safetensors: weight file missing"):
        check_safetensors(tmp_path / "missing.safetensors")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_weights_only_refusal_names_the_file_that_holds_code(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "fine.bin")
    torch.save({"w": _RunsCode(str(tmp_path / "ran"))}, tmp_path / "crafted.bin")
    with pytest.raises(CorruptWeightsError) as err:
        with refuse_unsafe_pickles(tmp_path):
            torch.load(tmp_path / "crafted.bin", weights_only=True)
    assert str(err.value).startswith(f"{tmp_path / 'crafted.bin'}: refused: it holds Python objects beyond tensors")
    assert not (tmp_path / "ran").exists()
    with refuse_unsafe_pickles(tmp_path):  # nothing refused: nothing said
        assert torch.equal(torch.load(tmp_path / "fine.bin", weights_only=True)["w"], torch.ones(2))
