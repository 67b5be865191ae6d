"""An offline table with an image column: scikit-learn's handwritten digit scans beside columns measured on them.

One row per scan (1797, 10 classes): ``image``, the path of a 64x64 PNG of the scan (dark ink on
white, bicubic from 8x8; written into the cache on first use), nine numeric columns measured on
the 8x8 scan itself (:data:`MEASURES`: the hand-made features a practitioner computes before
reaching for a network) and the target ``digit``. The images and the labels are real; the columns
are real measurements of the same scans, not metadata collected with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MEASURES = ["ink", "height", "width", "centre_row", "centre_col", "top_share", "left_share", "mirror_match", "holes"]
VERSION = "digit-scans-v1"


def scan_measures(scan: Any) -> dict[str, float]:
    """The nine :data:`MEASURES` of one 8x8 scan (values 0-16).

    ``ink`` total intensity / 16; ``height`` / ``width`` of the box around pixels above 4;
    ``centre_row`` / ``centre_col`` the ink-weighted centre; ``top_share`` / ``left_share`` the
    ink in the top / left half; ``mirror_match`` 1 - the left-right asymmetry; ``holes`` the
    background regions (pixels at most 4, 4-connected) that do not touch the border.
    """
    import numpy as np
    from scipy import ndimage

    x = np.asarray(scan, dtype=np.float64)
    total = float(x.sum()) or 1.0
    rows, cols = np.nonzero(x > 4)
    grid_r, grid_c = np.indices(x.shape)
    background, count = ndimage.label(x <= 4)
    edge = set(np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))) - {0}
    return {"ink": total / 16, "height": float(np.ptp(rows) + 1) if len(rows) else 0.0,
            "width": float(np.ptp(cols) + 1) if len(cols) else 0.0,
            "centre_row": float((grid_r * x).sum() / total), "centre_col": float((grid_c * x).sum() / total),
            "top_share": float(x[:4].sum() / total), "left_share": float(x[:, :4].sum() / total),
            "mirror_match": float(1 - np.abs(x - x[:, ::-1]).sum() / (2 * total)),
            "holes": float(count - len(edge))}


def digit_scans_table(folder: str | Path | None = None, limit: int | None = None, seed: int = 0, size: int = 64) -> Any:
    """The table as a DataFrame (``limit`` rows sampled with ``seed``; None: all 1797).

    Args:
        folder: Where the PNGs go (default: ``digit-scans-v1`` beside the feature cache); files already
            there are kept, so a second call writes nothing.
    """
    import numpy as np
    import pandas as pd
    from PIL import Image
    from sklearn.datasets import load_digits

    from mtransfer.atomic import atomic_file
    from mtransfer.builtins.corpora import scan_image

    if folder is None:
        from mtransfer.cache import default_cache_dir

        folder = default_cache_dir().parent / "tables" / VERSION
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    chosen = np.arange(len(digits.target))
    if limit is not None and limit < len(chosen):
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=limit, replace=False))
    rows = []
    for i in chosen:
        path = folder / f"scan_{int(i):04d}.png"
        if not path.is_file():
            with atomic_file(path) as tmp:
                Image.fromarray(np.repeat(scan_image(digits.images[i], size)[..., None], 3, axis=2)).save(tmp, format="PNG")
        rows.append({"image": str(path), **scan_measures(digits.images[i]), "digit": str(int(digits.target[i]))})
    return pd.DataFrame(rows)
