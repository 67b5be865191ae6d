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
    """A backbone config (as a dict), the pooling and the head's hidden sizes."""

    model_type = "mtransfer_text"

    def __init__(self, backbone: dict | None = None, pooling: str = "mean", hidden_sizes: list[int] | None = None,
                 activation: str = "gelu", **kwargs) -> None:
        self.backbone = backbone or {}
        self.pooling = pooling
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

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
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
