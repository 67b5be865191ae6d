"""mtransfer.hf_custom: the exported text classifier truncates and pools as training did."""

import torch

from mtransfer.hf_custom import MTransferForSequenceClassification, MTransferTextConfig


def _model(pooling: str, truncate_at=None, end_tokens=0):
    backbone = {"model_type": "bert", "vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32}
    torch.manual_seed(0)
    config = MTransferTextConfig(backbone=backbone, pooling=pooling, truncate_at=truncate_at, end_tokens=end_tokens,
                                 num_labels=3)
    model = MTransferForSequenceClassification(config).eval()
    for p in model.parameters():  # _init_weights leaves them to the export: give them values
        torch.nn.init.normal_(p, std=0.2)
    return model


def test_long_rows_keep_their_first_tokens_and_their_end_token_like_the_tokenizer():
    model = _model("mean", truncate_at=4, end_tokens=1)
    ids = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 5, 2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    kept, kept_mask, _ = model.truncate(ids, mask, None)
    assert kept.tolist() == [[1, 5, 6, 2], [1, 5, 2, 0]] and kept_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask).logits
        cut = model(input_ids=kept, attention_mask=kept_mask).logits
    assert torch.allclose(whole, cut)


def test_mean_pooling_ignores_padding_and_cls_pooling_reads_the_first_token():
    ids, mask = torch.tensor([[1, 5, 2]]), torch.tensor([[1, 1, 1]])
    padded, padded_mask = torch.tensor([[1, 5, 2, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]])
    for pooling in ("mean", "cls"):
        model = _model(pooling)
        with torch.no_grad():
            a = model(input_ids=ids, attention_mask=mask).logits
            b = model(input_ids=padded, attention_mask=padded_mask).logits
        assert a.shape == (1, 3) and torch.allclose(a, b, atol=1e-5)
