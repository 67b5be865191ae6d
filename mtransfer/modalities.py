"""The built-in modalities (adapter names) and their one-line summaries, without importing an adapter.

``mtransfer modalities`` and ``--help`` read this table, so they start without torch; each adapter
class takes its ``summary`` and ``default_input_column`` from here, and a test checks the table
against the registry (:func:`mtransfer.adapters.list_modalities`), so the two cannot drift.
"""

from __future__ import annotations

# name -> (summary, default input column), in the order users see them
BUILTIN_MODALITIES: dict[str, tuple[str, str]] = {
    "text": ("a transformers text encoder (BERT, RoBERTa, MiniLM, ...)", "text"),
    "sentence": ("a sentence-transformers model, with its own pooling and dense layers", "text"),
    "static_vectors": ("static word vectors (GloVe, word2vec, fastText) with an optional CNN / BiLSTM", "text"),
    "image": ("a transformers vision model or timm/... via TimmWrapper", "image"),
    "torch": ("a plain PyTorch image backbone (e.g. efficientnet_lite0, or package.module:callable)", "image"),
    "audio": ("a transformers speech encoder (wav2vec2, HuBERT, WavLM, Data2VecAudio, w2v-BERT)", "audio"),
}
# name -> the module that defines (and registers) its adapter: imported only when that modality is used, so a
# text model loads without the image stack (torchvision) and the audio one
ADAPTER_MODULES: dict[str, str] = {
    "text": "mtransfer.adapters.text", "sentence": "mtransfer.adapters.sentence",
    "static_vectors": "mtransfer.adapters.static_vectors", "image": "mtransfer.adapters.image",
    "torch": "mtransfer.adapters.torch_backbone", "audio": "mtransfer.adapters.audio",
}


def modality_lines() -> list[str]:
    """One line per modality, as ``mtransfer modalities`` prints them: the built-ins, then any adapter this
    process registered itself (a plug-in imported before the call)."""
    import sys

    lines = [f"{name:16s}{summary}" for name, (summary, _) in BUILTIN_MODALITIES.items()]
    base = sys.modules.get("mtransfer.adapters.base")
    if base is not None:
        lines += [f"{name:16s}{cls.summary}" for name, cls in base.ADAPTERS.items() if name not in BUILTIN_MODALITIES]
    return lines
