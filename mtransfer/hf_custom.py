"""A transformers model class for text heads that no native classifier expresses (mean or CLS pooling).

This file is self-contained (it imports only torch and transformers) because an export copies
it next to the weights: ``transformers.pipeline("text-classification", model=folder,
trust_remote_code=True)`` then loads it without mtransfer installed.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MTransferTextConfig(PretrainedConfig):
    """A backbone config (as a dict), the pooling, the training truncation and the head's hidden sizes.

    ``truncate_at`` is the number of tokens training kept per text (its ``max_length``); ``end_tokens`` the number of
    special tokens the tokenizer puts after a text ([SEP]: 1). Longer inputs are truncated in
    ``forward`` the way the tokenizer truncates them, so a pipeline called without
    ``truncation=True`` still scores exactly what training saw.
    """

    model_type = "mtransfer_text"

    def __init__(self, backbone: dict | None = None, pooling: str = "mean", hidden_sizes: list[int] | None = None,
                 activation: str = "gelu", truncate_at: int | None = None, end_tokens: int = 0, **kwargs) -> None:
        self.backbone = backbone or {}
        self.pooling = pooling
        self.truncate_at = truncate_at
        self.end_tokens = end_tokens
        self.hidden_sizes = list(hidden_sizes or [])
        self.activation = activation
        super().__init__(**kwargs)


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MTransferForSequenceClassification(PreTrainedModel):
    """Encoder -> mean / CLS pooling -> (MLP) -> linear classifier, as mtransfer trains it."""

    config_class = MTransferTextConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MTransferTextConfig) -> None:
        super().__init__(config)
        backbone = dict(config.backbone)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(backbone.pop("model_type"), **backbone))
        layers: list[nn.Module] = []
        width = self.encoder.config.hidden_size
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:  # weights always come from the export
        pass

    def truncate(self, input_ids, attention_mask, token_type_ids):
        """Rows longer than ``truncate_at``: the first tokens, then the row's end tokens, as the tokenizer truncates."""
        limit, end = self.config.truncate_at, self.config.end_tokens
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not limit or input_ids.shape[1] <= limit:
            return input_ids, attention_mask, token_type_ids
        lengths = attention_mask.sum(1)
        keep = torch.arange(limit, device=input_ids.device).expand(input_ids.shape[0], limit)
        long_rows = (lengths > limit).unsqueeze(1)
        tail = keep >= limit - end  # the last `end` positions take the row's own last tokens
        source = torch.where(long_rows & tail, keep + (lengths.unsqueeze(1) - limit), keep)
        picked = [t.gather(1, source) if t is not None else None for t in (input_ids, attention_mask, token_type_ids)]
        return picked[0], picked[1], picked[2]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        input_ids, attention_mask, token_type_ids = self.truncate(input_ids, attention_mask, token_type_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = (attention_mask if attention_mask is not None else torch.ones(hidden.shape[:2], device=hidden.device))
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        logits = self.classifier(self.body(pooled))
        return SequenceClassifierOutput(logits=logits)
