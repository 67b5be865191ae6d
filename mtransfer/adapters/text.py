"""Text adapter for transformers encoders (BERT, RoBERTa, DistilBERT, MiniLM, ELECTRA, ...)."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from mtransfer.modalities import BUILTIN_MODALITIES
from mtransfer.adapters.base import (Adapter, Features, LayerGroup, NativeForm, load_pretrained, register_adapter,
                                     require_texts)

POOLINGS = ("cls", "mean", "pooler")


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of transformer blocks: the ModuleList holding the most parameters."""
    best: tuple[str, nn.ModuleList] | None = None
    best_size = -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = (name, module), size
    if best is None:
        raise ValueError(f"Cannot find the transformer blocks of {type(model).__name__}: no nn.ModuleList in it.")
    return best


def encoder_layer_groups(backbone: nn.Module, unused: Sequence[nn.Parameter] = ()) -> list[LayerGroup]:
    """Layer groups of a transformers encoder, input side first.

    ``embeddings`` (every parameter before the first block), ``layer.0`` ... ``layer.{n-1}``
    (one per block of the largest ``nn.ModuleList``), and ``top`` (parameters after the blocks,
    e.g. a pooler or final norm) when there are any; ``unused`` parameters are left out.
    """
    blocks_name, blocks = _block_list(backbone)
    prefix = blocks_name + "."
    skip = {id(p) for p in unused}
    embeddings = LayerGroup("embeddings")
    layers = [LayerGroup(f"layer.{i}", modules=[block]) for i, block in enumerate(blocks)]
    top = LayerGroup("top")
    seen_blocks = False
    in_blocks = {id(p) for p in blocks.parameters()}
    for name, p in backbone.named_parameters():
        if id(p) in skip:
            continue
        if id(p) in in_blocks or name.startswith(prefix):
            seen_blocks = True
            continue
        (top if seen_blocks else embeddings).params.append(p)
    groups = [embeddings, *layers] if embeddings.params else list(layers)
    if top.params:
        groups.append(top)
    return groups


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what a tokenizer does (vocabulary, normalisation, pre-tokenisation), not of its padding state."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # padding / truncation state changes as the tokenizer is used: leave it out
        spec = json.dumps({k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")},
                          sort_keys=True)
    else:
        spec = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}|{spec}".encode()).hexdigest()


@register_adapter("text")
class TextAdapter(Adapter):
    """A transformers text encoder with its tokenizer, by Hub id or local folder.

    Layer groups, input side first: ``embeddings`` (everything before the first block),
    ``layer.0`` ... ``layer.{n-1}`` (one per transformer block), and ``top`` (what follows the
    blocks, e.g. BERT's pooler or a final layer norm) when it has parameters that are used.

    Args:
        model_name_or_path: Hub id or folder of a transformers encoder.
        max_length: Tokens kept per text (longer texts are truncated); default: 128 or the
            model's limit when that is lower.
        pooling: ``cls`` (first token's last hidden state), ``mean`` (mean over real tokens) or
            ``pooler`` (the model's own pooler output, e.g. BERT's tanh layer).
        pretrained: False builds the same architecture with random weights (a baseline).
        revision: Hub revision (branch, tag or commit) when loading by id.

    >>> adapter = TextAdapter("prajjwal1/bert-tiny")  # doctest: +SKIP
    >>> adapter.forward_features(adapter.preprocess(["a text"])).pooled.shape  # doctest: +SKIP
    torch.Size([1, 128])
    """

    pipeline_tag = "text-classification"
    max_length_setting = "max_length"
    summary = BUILTIN_MODALITIES["text"][0]

    def __init__(self, model_name_or_path: str | os.PathLike, *, max_length: int | None = None, pooling: str = "mean",
                 pretrained: bool = True, revision: str | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"TextAdapter pooling={pooling!r}; expected one of {', '.join(POOLINGS)}.")
        if max_length is not None and max_length < 2:
            raise ValueError(f"TextAdapter max_length must be >= 2 tokens, got {max_length}.")
        self.model_name_or_path = str(model_name_or_path)
        self.pooling = pooling
        self.revision = revision
        kwargs = {"revision": revision} if revision else {}
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, model_name_or_path, "tokenizer", **kwargs)
        if pretrained:
            self.backbone = load_pretrained(AutoModel.from_pretrained, model_name_or_path, "text model", **kwargs)
        else:
            config = load_pretrained(AutoConfig.from_pretrained, model_name_or_path, "model config", **kwargs)
            self.backbone = AutoModel.from_config(config)
        model_max = getattr(self.backbone.config, "max_position_embeddings", None)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if tok_max and tok_max < 100_000:
            model_max = min(model_max, tok_max) if model_max else tok_max
        self.max_length = int(max_length) if max_length is not None else min(128, model_max or 128)
        self.input_limit = model_max or self.max_length  # the longest input the encoder takes
        if model_max and self.max_length > model_max:
            raise ValueError(
                f"TextAdapter max_length={self.max_length} exceeds what {self.model_name_or_path!r} supports "
                f"(max_position_embeddings={model_max})."
            )
        if pooling == "pooler" and getattr(self.backbone, "pooler", None) is None:
            raise ValueError(
                f"TextAdapter pooling='pooler' but {type(self.backbone).__name__} from {self.model_name_or_path!r} "
                "has no pooler; use 'cls' or 'mean'."
            )
        for p in self.unused_parameters():
            p.requires_grad_(False)
        self.embedding_dim = int(self.backbone.config.hidden_size)

    # --- contract -----------------------------------------------------------------------
    def validate_inputs(self, inputs: Sequence[Any], source: str = "inputs", hint: str = "") -> None:
        require_texts(inputs, source, "text", allow_pairs=True)

    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        if inputs and not isinstance(inputs[0], str):
            first, second = zip(*inputs)
            enc = self.tokenizer(list(first), list(second), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        else:
            enc = self.tokenizer(list(inputs), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return dict(enc)

    def input_lengths(self, inputs: Sequence[Any]) -> list[int]:
        return self._mask_lengths(inputs)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        out = self.backbone(**batch)
        hidden = out.last_hidden_state
        mask = batch["attention_mask"]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return Features(pooled=pooled, tokens=hidden, mask=mask)

    def unused_parameters(self) -> list[nn.Parameter]:
        pooler = getattr(self.backbone, "pooler", None)
        if self.pooling != "pooler" and isinstance(pooler, nn.Module):
            return list(pooler.parameters())
        return []

    def layer_groups(self) -> list[LayerGroup]:
        return encoder_layer_groups(self.backbone, self.unused_parameters())

    def blocks(self) -> nn.ModuleList:
        return _block_list(self.backbone)[1]

    def feature_fingerprint(self) -> dict[str, Any]:
        return {**super().feature_fingerprint(), "tokenizer": tokenizer_fingerprint(self.tokenizer)}

    def export_tokenizer(self, model_truncates: bool = False) -> Any:
        """A copy of the tokenizer for an export.

        For a native classifier it truncates where training did (``model_max_length = max_length``:
        ``pipeline(..., truncation=True)`` then scores what training saw). A custom head truncates
        its inputs itself (``model_truncates``), so its tokenizer keeps the encoder's own limit:
        inputs between the training length and that limit are scored as training saw them with no
        "sequence length is longer than the specified maximum" warning.
        """
        import copy

        tokenizer = copy.deepcopy(self.tokenizer)
        tokenizer.model_max_length = self.input_limit if model_truncates else self.max_length
        return tokenizer

    def special_tokens_around(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before and after a single text (BERT: 1 and 1)."""
        probe = "a short example text"
        full = self.tokenizer(probe)["input_ids"]
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                return start, len(full) - len(bare) - start
        return 0, 0

    def transformers_form(self) -> NativeForm:
        from transformers import AutoModelForSequenceClassification

        return NativeForm(AutoModelForSequenceClassification, self.export_tokenizer(),
                          self.preprocess(["a short example text", "another one"]))

    def custom_transformers_model(self, model: Any) -> tuple[Any, Any, dict[str, torch.Tensor]] | None:
        """The registered custom head (:mod:`mtransfer.hf_custom`) for mean or CLS pooling and MLP heads."""
        from mtransfer.heads import folded_linear
        from mtransfer.hf_custom import MTransferForSequenceClassification, MTransferTextConfig

        head = model.head
        if self.pooling not in ("mean", "cls"):
            return None
        config = MTransferTextConfig(backbone=self.backbone.config.to_dict(), pooling=self.pooling,
                                     truncate_at=self.max_length, end_tokens=self.special_tokens_around()[1],
                                     hidden_sizes=head.config.hidden_sizes, activation=head.config.activation,
                                     num_labels=len(model.label_names), id2label=dict(enumerate(model.label_names)),
                                     label2id={n: i for i, n in enumerate(model.label_names)}, problem_type=head.task)
        MTransferTextConfig.register_for_auto_class()
        MTransferForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
        native = MTransferForSequenceClassification(config)
        with torch.no_grad():
            native.encoder.load_state_dict(self.backbone.state_dict())
            for a, b in zip([m for m in head.body if isinstance(m, nn.Linear)],
                            [m for m in native.body if isinstance(m, nn.Linear)]):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
            weight, bias = folded_linear(head, allow_hidden=True)  # regression: original units
            native.classifier.weight.copy_(weight)
            native.classifier.bias.copy_(bias)
        return native.eval(), self.export_tokenizer(model_truncates=True), self.preprocess(["a short example text", "another one"])

    def get_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "pooling": self.pooling, "source": self.model_name_or_path}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.backbone.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
