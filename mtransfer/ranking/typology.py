"""Typological similarity from URIEL (the data of the PyPI package ``lang2vec``), as a source ranker.

Each language is the vector of URIEL's 289 syntax, phonology and phoneme-inventory features,
with the gaps filled by URIEL's own k-nearest-neighbour predictions (lang2vec's
``syntax_knn+phonology_knn+inventory_knn``); a source's score for a target is the cosine
similarity of their vectors. It reads the package's data files directly (``numpy.load``, no
pickle, no network), so it works offline, without importing lang2vec's module (which needs
``pkg_resources``).

>>> uriel_similarity(["bn", "hi", "de"], ["as"])["as"]  # doctest: +SKIP
{'bn': 0.846, 'hi': 0.771, 'de': 0.683}
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np

FEATURES = "feature_predictions.npz"


@functools.lru_cache(maxsize=1)
def _uriel() -> tuple[dict[str, int], np.ndarray, dict[str, str]]:
    spec = importlib.util.find_spec("lang2vec")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("typological similarity reads URIEL from the package 'lang2vec' (pip install lang2vec==1.1.2; "
                          "scripts/setup.sh installs it).")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    with np.load(data / FEATURES, allow_pickle=False) as table:
        index = {str(code): i for i, code in enumerate(table["langs"])}
        values = np.asarray(table["data"][:, :, 0], dtype=np.float64)
    letters = json.loads((data / "letter_codes.json").read_text())
    return index, values, letters


def uriel_vector(language: str) -> np.ndarray:
    """URIEL's feature vector of ``language`` (ISO 639-1 like ``bn`` or 639-3 like ``ben``). Shape: ``(289,)``."""
    index, values, letters = _uriel()
    code = letters.get(language, language)
    if code not in index:
        raise ValueError(f"URIEL has no language {language!r} (looked up as {code!r}); give an ISO 639-1 or 639-3 code.")
    return values[index[code]]


def uriel_similarity(sources: Sequence[str], targets: Sequence[str]) -> dict[str, dict[str, float]]:
    """target -> source -> cosine similarity of their URIEL vectors (higher: typologically closer)."""
    vectors = {lang: uriel_vector(lang) for lang in [*sources, *targets]}

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    return {t: {s: round(cosine(vectors[t], vectors[s]), 4) for s in sources} for t in targets}
