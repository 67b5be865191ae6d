"""The adapter contract every modality implements.

An adapter owns a pretrained backbone and everything between raw inputs and features:

* :meth:`Adapter.preprocess` turns a list of raw inputs (texts, images, waveforms) into a batch
  of tensors; it runs in the data loader's collate function.
* :meth:`Adapter.forward_features` runs the backbone on that batch and returns
  :class:`Features`: a pooled embedding, plus token or frame features and their mask for heads
  that need them (CTC).
* :meth:`Adapter.layer_groups` lists the backbone's parameters as ordered
  :class:`LayerGroup` objects, from the input embeddings / stem up to the top, which strategies
  freeze and give per-group learning rates.
* :meth:`Adapter.save_pretrained` / :meth:`Adapter.from_pretrained` persist it; a Hugging Face
  backbone goes through its own ``save_pretrained``.

Adapters register under a short name (``"text"``) so a saved model can rebuild its adapter.
"""

from __future__ import annotations

import abc
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import torch
from torch import nn

from mtransfer.builtins import resolve_model
from mtransfer.weight_files import refuse_unsafe_pickles

ADAPTERS: dict[str, type[Adapter]] = {}
T = TypeVar("T")


def register_adapter(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make an adapter class loadable by name."""

    def wrap(cls):
        cls.modality = name
        cls.adapter_type = name  # the old name of the attribute, kept for one version
        ADAPTERS[name] = cls
        return cls

    return wrap


def list_modalities() -> list[str]:
    """The adapter (modality) names: the built-ins (:data:`mtransfer.modalities.BUILTIN_MODALITIES`), then any
    registered by a plug-in. The one list every entry point reads; no adapter module is imported."""
    from mtransfer.modalities import BUILTIN_MODALITIES

    return [*BUILTIN_MODALITIES, *(n for n in ADAPTERS if n not in BUILTIN_MODALITIES)]


def get_adapter_class(name: str) -> type[Adapter]:
    """The adapter class registered as ``name``; a built-in one's module is imported on first use."""
    import importlib

    from mtransfer.modalities import ADAPTER_MODULES

    if name not in ADAPTERS and name in ADAPTER_MODULES:
        importlib.import_module(ADAPTER_MODULES[name])
    if name not in ADAPTERS:
        raise ValueError(f"Unknown adapter type {name!r}; expected one of {', '.join(sorted(list_modalities()))}.")
    return ADAPTERS[name]


def adapter_settings(name: str) -> tuple[list[str], bool]:
    """The settings the ``name`` adapter's constructor takes (besides the model it wraps), and whether it
    takes any other keyword too."""
    import inspect

    params = inspect.signature(get_adapter_class(name).__init__).parameters
    source_param = list(params)[1]  # the model (or vectors) the adapter wraps
    allowed = [n for n, p in params.items() if n not in ("self", source_param) and not n.startswith("_")
               and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return allowed, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_adapter(modality: str, model_name_or_path: str | os.PathLike, **adapter_kwargs: Any) -> Adapter:
    """Build the adapter registered as ``modality`` (``"text"``, ...) around a model name, ``builtin:`` name or folder."""
    name = model_name_or_path
    if isinstance(name, str):  # builtin:minilm -> its folder; anything else unchanged
        model_name_or_path = resolve_model(name, modality)
    local = Path(model_name_or_path) if isinstance(model_name_or_path, (str, os.PathLike)) else None
    adapter_cls = get_adapter_class(modality)
    with quiet_transformers(), refuse_unsafe_pickles(local):
        adapter = adapter_cls(model_name_or_path, **adapter_kwargs)
    if isinstance(name, str) and name != model_name_or_path:
        adapter.model_name_or_path = name  # cards and run identities name the builtin, not a local folder
    return adapter


def check_adapter_settings(name: str, settings: Sequence[str], where: str, prefix: str = "") -> None:
    """Raise a ``ValueError`` naming ``where`` for a setting the ``name`` adapter does not take."""
    import difflib

    allowed, takes_any = adapter_settings(name)
    for key in settings:
        if key not in allowed and not takes_any:
            close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise ValueError(f"{where}: unknown key {prefix}{key} for the {name} adapter{hint}; "
                             f"it takes {', '.join(allowed)}.")


@dataclass
class Features:
    """What an adapter gives a head.

    Shape:
        pooled: ``(batch, dim)``.
        tokens: ``(batch, seq, dim)`` token or frame features, or None.
        mask: ``(batch, seq)``, 1 for real positions, or None.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@dataclass
class NativeForm:
    """How a model with this adapter maps onto a transformers ``AutoModelFor...`` class (for export).

    Attributes:
        auto_class: e.g. ``transformers.AutoModelForImageClassification``.
        processor: Saved beside the weights (tokenizer, image processor, feature extractor), or None.
        sample: A preprocessed batch the export is checked on.
        configure: Edits the backbone config (copied, labels already set) before the model is built.
        finish: Fills what the classifier copy does not (e.g. an audio projector) in the built model.
    """

    auto_class: Any
    processor: Any
    sample: dict[str, torch.Tensor]
    configure: Callable[[Any], None] = lambda config: None
    finish: Callable[[Any], None] = lambda native: None


@dataclass
class LayerGroup:
    """A named set of modules that freeze, unfreeze and take a learning rate together."""

    name: str
    modules: list[nn.Module] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)

    def parameters(self) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for m in self.modules:
            for p in m.parameters():
                seen.setdefault(id(p), p)
        for p in self.params:
            seen.setdefault(id(p), p)
        return list(seen.values())

    def named_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        ids = {id(p) for p in self.parameters()}
        return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


class Adapter(nn.Module, abc.ABC):
    """Raw inputs -> tensors -> backbone -> :class:`Features`.

    Subclasses set :attr:`embedding_dim` and implement the abstract methods.
    """

    modality: ClassVar[str] = ""  # the registry key (``--modality``); ``adapter_type`` is its old name
    adapter_type: ClassVar[str] = ""
    pipeline_tag: ClassVar[str] = ""  # the Hub pipeline of a classifier on this adapter
    media_suffixes: ClassVar[tuple[str, ...]] = ()  # file types predict reads from a folder (image / audio)
    max_length_setting: ClassVar[str | None] = None  # the setting `--max-length` sets, if any
    default_input_column: ClassVar[str] = "text"  # the data column of raw inputs unless told otherwise
    training_texts_setting: ClassVar[str | None] = None  # a setting that recipes fill with the training inputs
    summary: ClassVar[str] = ""  # one line for `mtransfer train --help`
    whole_inputs: bool = False  # set for CTC: training must not crop inputs (the transcript covers all of it)
    embedding_dim: int

    @abc.abstractmethod
    def preprocess(self, inputs: Sequence[Any], *, training: bool = False) -> dict[str, torch.Tensor]:
        """Turn raw inputs into a batch of tensors (collate time, on CPU)."""

    @abc.abstractmethod
    def forward_features(self, batch: dict[str, torch.Tensor]) -> Features:
        """Run the backbone on a batch from :meth:`preprocess`."""

    @abc.abstractmethod
    def layer_groups(self) -> list[LayerGroup]:
        """Backbone parameters in ordered groups, input side first."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Settings that rebuild this adapter with :meth:`from_pretrained` (JSON types only)."""

    @abc.abstractmethod
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the backbone (and preprocessing files) into ``folder``."""

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **config: Any) -> Adapter:
        """Rebuild an adapter saved by :meth:`save_pretrained` with :meth:`get_config`'s settings.

        The default passes the folder and the settings to the constructor; a ``source`` setting
        (the original Hub id or path) is kept as ``model_name_or_path`` for model cards.
        """
        source = config.pop("source", None)
        adapter = cls(Path(folder), **config)
        if source:
            adapter.model_name_or_path = source
        return adapter

    def validate_inputs(self, inputs: Sequence[Any], source: str = "inputs", hint: str = "Fix or remove them.") -> None:
        """Raise a ``ValueError`` naming ``source`` and the bad items; default: those :meth:`find_bad_inputs` finds."""
        from mtransfer.media import format_bad_inputs

        bad = self.find_bad_inputs(inputs)
        if bad:
            raise ValueError(format_bad_inputs(bad, len(inputs), source, hint=hint))

    def find_bad_inputs(self, inputs: Sequence[Any]) -> list[tuple[int, str]]:
        """``(index, message)`` for every input this adapter cannot read; default: none."""
        return []

    def input_lengths(self, inputs: Sequence[Any]) -> list[int] | None:
        """Each input's length in the unit its batch is padded in (tokens, samples), for length-grouped
        batches (``TrainingArguments.group_by_length``); None: inputs of one size (images), no grouping."""
        return None

    def _mask_lengths(self, inputs: Sequence[Any], chunk: int = 512) -> list[int]:
        """Lengths as the valid positions of ``preprocess``'s attention mask (tokenisers), ``chunk`` inputs at a time."""
        out: list[int] = []
        for k in range(0, len(inputs), chunk):
            out += self.preprocess(list(inputs[k:k + chunk]))["attention_mask"].sum(1).tolist()
        return [int(n) for n in out]

    def feature_fingerprint(self) -> dict[str, Any]:
        """Everything about this adapter that changes its features (a feature-cache key part).

        The default covers the adapter type, its settings (without the ``source`` name) and a
        content hash of all its weights; adapters add their preprocessing state (tokenizer...).
        """
        from mtransfer.cache import hash_tensors

        config = {k: v for k, v in self.get_config().items() if k != "source"}
        return {"type": self.modality, "config": config, "weights": hash_tensors(self.state_dict())}

    def input_fingerprint(self, inputs: Sequence[Any]) -> str:
        """Hash of a dataset's inputs (a feature-cache key part); file-based adapters add sizes and times."""
        from mtransfer.cache import text_fingerprint

        return text_fingerprint(inputs)

    def transformers_form(self) -> NativeForm:
        """The transformers-native form of a classifier on this adapter (see :mod:`mtransfer.export`).

        Raises:
            ValueError: This adapter has none (the default).
        """
        raise ValueError(f"the {self.modality!r} adapter has no transformers-native form; keep the mtransfer folder "
                         "(TransferModel.from_pretrained loads it in one call).")

    def custom_transformers_model(self, model: Any) -> tuple[Any, Any, dict[str, torch.Tensor]] | None:
        """A fallback export with a registered custom head: ``(native model, processor, sample)``, or None."""
        return None

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters the forward pass never touches (kept frozen, outside every group)."""
        return []

    def head_modules(self) -> list[nn.Module]:
        """New, randomly initialised modules inside the adapter (e.g. a sequence encoder).

        They are not transferred, so they train with the head in every phase, and pooled
        features are not cached for head-only phases (they change as these modules train).
        """
        return []

    # --- the lower part of the network, cached (mtransfer.partial_cache) ------------------
    def blocks(self) -> nn.ModuleList | None:
        """The backbone's stack of sequence blocks, input side first (the ``layer.i`` groups), each taking and
        returning hidden states ``(batch, positions, dim)`` as its first argument; None (the default) where the
        backbone has none, or its blocks change the shape (CNN stages): no lower part of it is cached."""
        return None

    def random_below_blocks(self) -> str | None:
        """What makes training differ from evaluation below the blocks (augmentation, a random crop, SpecAugment,
        LayerDrop), so that cached lower activations would change training; None when nothing does."""
        return None

    def block_input(self, batch: dict[str, torch.Tensor], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden states entering block ``index`` and their mask (1 for real positions), from one forward pass
        in which block ``index`` and those above it are skipped (the model's own forward still makes the output
        mask, which depends on the input alone; the skipped blocks' work would be thrown away).

        Shape:
            ``(batch, positions, dim)`` and ``(batch, positions)``.
        """
        blocks = self.blocks()
        if blocks is None:
            raise ValueError(f"the {self.modality} adapter has no block stack to split.")
        seen: list[torch.Tensor] = []

        def grab(module, args, kwargs):
            seen.append(args[0] if args else kwargs["hidden_states"])

        def skip(hidden_states, *args, **kwargs):
            return hidden_states

        handle = blocks[index].register_forward_pre_hook(grab, with_kwargs=True)
        patched = [(block, block.__dict__.get("forward")) for block in blocks[index:]]
        for block, _ in patched:
            block.forward = skip
        try:
            out = self.forward_features(batch)
        except Exception:
            if seen and seen[0].dim() != 3:  # the skipped stages change the shape (a CNN): the check below says so
                out = None
            else:
                raise
        finally:
            handle.remove()
            _restore_forwards(patched)
        if len(seen) != 1 or seen[0].dim() != 3 or out is None:
            raise ValueError(f"block {index} of the {self.modality} adapter ran {len(seen)} time(s) or took no "
                             "(batch, positions, dim) hidden states: its input cannot be cached.")
        hidden = seen[0]
        mask = out.mask if out.mask is not None and out.mask.shape == hidden.shape[:2] else None
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return hidden, mask

    def forward_from_block(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor, index: int) -> Features:
        """:meth:`forward_features` with the blocks below ``index`` skipped and ``hidden`` entering block ``index``.

        The batch still flows through the backbone's stem (it makes the attention masks and shapes the
        model's own forward expects); what the stem and the skipped blocks compute is replaced by ``hidden``.
        """
        blocks = self.blocks()
        if blocks is None:
            raise ValueError(f"the {self.modality} adapter has no block stack to split.")

        def skip(hidden_states, *args, **kwargs):
            return hidden_states

        def inject(module, args, kwargs):
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        handle = blocks[index].register_forward_pre_hook(inject, with_kwargs=True)
        patched = [(block, block.__dict__.get("forward")) for block in blocks[:index]]  # an instance's own forward
        for block, _ in patched:
            block.forward = skip
        try:
            return self.forward_features(batch)
        finally:
            handle.remove()
            _restore_forwards(patched)

    def weights_below_block(self, index: int) -> str:
        """Content hash of every weight the input of block ``index`` depends on: the layer groups below that
        block's group, and every buffer (a feature-cache key part: training the blocks above leaves it as is)."""
        from mtransfer.cache import hash_tensors

        groups = self.layer_groups()
        block = self.blocks()[index]
        position = next((i for i, g in enumerate(groups) if len(g.modules) == 1 and g.modules[0] is block), None)
        if position is None:
            raise ValueError(f"block {index} of the {self.modality} adapter is not a layer group of its own.")
        below = {id(p) for g in groups[:position] for p in g.parameters()}
        return hash_tensors({n: p for n, p in self.named_parameters(remove_duplicate=False) if id(p) in below}
                            | dict(self.named_buffers(remove_duplicate=False)))


def _restore_forwards(patched: list[tuple[nn.Module, Any]]) -> None:
    """Undo ``block.forward = skip``: the instance's own forward back, or the class's when it had none."""
    for block, own in patched:
        if own is None:
            del block.forward
        else:
            block.forward = own


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-file progress bars and load reports inside mtransfer calls."""
    from transformers.utils import logging as tlog

    was_enabled = tlog.is_progress_bar_enabled()
    verbosity = tlog.get_verbosity()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        if was_enabled:
            tlog.enable_progress_bar()
        tlog.set_verbosity(verbosity)


def require_texts(inputs: Sequence[Any], source: str, adapter: str, allow_pairs: bool = False) -> None:
    """Raise a ``ValueError`` naming ``source`` and the first input that is not a string (or a pair of strings)."""
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            continue
        if allow_pairs and isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            continue
        expected = "a string or a pair of strings" if allow_pairs else "a string"
        raise ValueError(f"{source}: item {i} is {type(item).__name__} ({str(item)[:60]!r}); the {adapter} adapter "
                         f"expects {expected}.")


def load_pretrained(loader: Callable[..., T], name_or_path: str | os.PathLike, what: str, **kwargs: Any) -> T:
    """Call a ``from_pretrained`` loader and turn its failures into a clear error.

    Args:
        loader: e.g. ``transformers.AutoModel.from_pretrained``.
        name_or_path: A local folder or a Hugging Face Hub id.
        what: What is loaded, for the message (``"text model"``, ``"tokenizer"``).

    Raises:
        FileNotFoundError: A local-looking path that does not exist.
        OSError: The id is neither a local folder nor cached, and could not be downloaded.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.startswith((".", "/", "~")) and not path.exists():
        raise FileNotFoundError(f"Cannot load {what} {text!r}: no such folder.")
    try:
        with quiet_transformers():
            return loader(str(path) if path.exists() else text, **kwargs)
    except (OSError, ValueError) as err:  # transformers raises OSError for missing repos/files
        if path.exists():
            raise OSError(f"Cannot load {what} from folder {text!r}: {_first_line(err)}") from err
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        reason = "the Hub is switched off (HF_HUB_OFFLINE=1)" if offline else "it could not be downloaded from the Hugging Face Hub"
        raise OSError(
            f"Cannot load {what} {text!r}: it is not a local folder, not in the local Hugging Face cache, and {reason}. "
            f"Pass the path of a folder saved with save_pretrained, download the model first, or use a shipped model "
            f"(builtin:minilm). ({_first_line(err)})"
        ) from err


def _first_line(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return msg[0] if msg else type(err).__name__
