"""The package's layers, checked on its imports: each module imports only from its own layer or those below it.

On the main before this test, 15 imports ran back up (13 of them hidden inside functions, 9 as
``import mtransfer as mt``): ``speech/matrix.py``, ``speech/source_choice.py``, ``ranking/validate.py``,
``builtins/demo.py``, ``builtins/speech_demo.py`` and ``builtins/self_taught_comparison.py`` trained models
from below the Trainer, ``card.py`` and ``config.py`` imported the package root, ``adapters/text.py``
imported ``export.py``, and ``data.py`` and ``speech/data.py`` imported each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mtransfer"

# bottom to top; a module belongs to the layer of the longest prefix listed (README, "Layout")
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("atomic", "lazy", "locks", "weight_files", "record", "schedules", "metrics", "plots", "hub", "media", "cache",
                    "speech.vocabulary", "speech.ctc", "speech.decoding")),
    ("registry", ("builtins", "backbones", "modalities", "speech.presets")),
    ("models", ("adapters", "heads", "hf_custom", "tasks", "model", "strategies", "data", "partial_cache", "speech.data")),
    ("core", ("training", "head_search", "contrastive", "checkpoints", "config", "linear", "sklearn", "tabular", "ranking", "export", "card",
              "self_taught", "speech.pretrain", "speech")),
    ("experiments", ("experiments",)),
    ("entry points", ("cli", "")),  # "": the package root (mtransfer/__init__.py, the public API)
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer index of ``module`` (relative to the package, "" for the root)."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, found = len(prefix), index
    if found is None:
        raise AssertionError(f"mtransfer.{module} belongs to no layer: add it to LAYERS (and to the README's layout)")
    return found


def imports() -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of an mtransfer module, inside functions too."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "metrics" in path.parts and path.parent.name != "metrics":  # shipped evaluate modules, loaded by path
            continue
        importer = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name == "mtransfer" or name.startswith("mtransfer."):
                    out.append((importer, name[len("mtransfer."):] if name != "mtransfer" else "", node.lineno))
    return out


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [f"mtransfer.{a or '__init__'} (line {line}, {LAYERS[layer_of(a)][0]}) imports "
              f"mtransfer{'.' + b if b else ''} ({LAYERS[layer_of(b)][0]})"
              for a, b, line in imports() if layer_of(b) > layer_of(a)]
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_no_import_circle_between_modules():
    """Modules that import each other (directly or round a loop), a package's own registration import aside."""
    graph: dict[str, set[str]] = {}
    for a, b, _ in imports():
        if a != b and not (a.startswith(b + ".") and b):  # a sub-module importing its package's __init__
            graph.setdefault(a, set()).add(b)
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            packages = {m.split(".")[0] for m in group}
            if len(group) > 1 and not (len(packages) == 1 and any("." not in m for m in group)):
                circles.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not circles, f"modules that import each other: {circles}"


def test_library_functions_do_not_import_the_package_root():
    """``import mtransfer as mt`` inside a library function hid the real layering from readers and tools."""
    found = [f"mtransfer.{a} line {line}" for a, b, line in imports() if b == "" and a not in ("",)]
    assert not found, found


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        if "metrics" in path.parts and path.parent.name != "metrics":
            continue
        layer_of(module_name(path))
