"""sentence-transformers encoders as text backbones, with their own pooling and normalisation."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import Adapter, Features, LayerGroup, load_pretrained, register_adapter, require_texts
from mtransfer.adapters.text import _block_list, encoder_layer_groups, tokenizer_fingerprint


@register_adapter("sentence")
class SentenceTransformerAdapter(Adapter):
    """Any ``SentenceTransformer`` by Hub id or folder, the pooled feature being its sentence embedding.

    The model's own modules run unchanged (its pooling, dense layers and normalisation), so
    frozen features equal ``SentenceTransformer.encode``. Layer groups: those of the underlying
    transformers encoder (``embeddings``, ``layer.0`` ...), then ``top`` for the parameters of
    the modules after it (dense projections), when there are any.

    Args:
        model_name_or_path: Hub id or folder of a sentence-transformers model.
        max_length: Tokens kept per text (default: the model's ``max_seq_length``).
        revision: Hub revision when loading by id.

    >>> adapter = SentenceTransformerAdapter("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> adapter.forward_features(adapter.preprocess(["a text"])).pooled.shape  # doctest: +SKIP
    torch.Size([1, 384])
    """

    pipeline_tag = "text-classification"
    max_length_setting = "max_length"
    summary = BUILTIN_MODALITIES["sentence"][0]

    def __init__(self, model_name_or_path: str | os.PathLike, *, max_length: int | None = None,
                 revision: str | None = None) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        self.model_name_or_path = str(model_name_or_path)
        kwargs = {"revision": revision} if revision else {}

        def load(path: str, **kw: Any) -> SentenceTransformer:
            return SentenceTransformer(path, device="cpu", **kw)

        self.backbone = load_pretrained(load, model_name_or_path, "sentence-transformers model", **kwargs)
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"SentenceTransformerAdapter max_length must be >= 2 tokens, got {max_length}.")
            self.backbone.max_seq_length = int(max_length)
        self.max_length = int(self.backbone.max_seq_length)
        first = self.backbone[0]
        self.encoder: nn.Module | None = getattr(first, "auto_model", None)
        if self.encoder is None:
            raise ValueError(f"{self.model_name_or_path!r}: its first module ({type(first).__name__}) wraps no transformers "
                             "model; the sentence adapter needs a Transformer module first.")
        for p in self.unused_parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            self.embedding_dim = int(self.forward_features(self.preprocess(["dimension probe"])).pooled.shape[-1])

    def validate_inputs(self, inputs: Sequence[Any], source: str = "inputs", hint: str = "") -> None:
        require_texts(inputs, source, "sentence")

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        enc = self.backbone.preprocess(list(inputs))
        return {k: v for k, v in enc.items() if torch.is_tensor(v)}

    def input_lengths(self, inputs: Sequence[Any]) -> list[int]:
        return self._mask_lengths(inputs)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        out = self.backbone({**batch, "modality": "text"})
        return Features(pooled=out["sentence_embedding"], tokens=out.get("token_embeddings"), mask=batch.get("attention_mask"))

    def unused_parameters(self) -> list[nn.Parameter]:
        pooler = getattr(self.encoder, "pooler", None)  # sentence-transformers pools the token states itself
        return list(pooler.parameters()) if isinstance(pooler, nn.Module) else []

    def layer_groups(self) -> list[LayerGroup]:
        groups = encoder_layer_groups(self.encoder, self.unused_parameters())
        encoder_params = {id(p) for p in self.encoder.parameters()}
        after = [p for p in self.backbone.parameters() if id(p) not in encoder_params]
        if after:
            if groups[-1].name == "top":
                groups[-1].params.extend(after)
            else:
                groups.append(LayerGroup("top", params=after))
        return groups

    def blocks(self) -> nn.ModuleList:
        return _block_list(self.encoder)[1]

    def feature_fingerprint(self) -> dict[str, Any]:
        return {**super().feature_fingerprint(), "tokenizer": tokenizer_fingerprint(self.backbone.tokenizer),
                "modules": repr(self.backbone)}

    def get_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "source": self.model_name_or_path}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.backbone.save(str(folder))
