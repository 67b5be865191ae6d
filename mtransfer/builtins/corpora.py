"""Real labelled corpora that exist offline on a Debian machine with mtransfer's setup.

* scikit-learn's handwritten digits as RGB images (:func:`digits_splits`), for image models;
* Debian's ``fortunes`` packages: each category file (``computers``, ``food``, ``love``,
  ``politics``, ``science``...) is a topic label, each fortune a text. Attribution lines
  (``-- Author, "Title", stardate 3012.4``) are removed so that the label has to be read from
  the content.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Sequence

FORTUNES_DIR = Path("/usr/share/games/fortunes")
DEFAULT_TOPICS = ("computers", "food", "love", "politics", "science")
_ATTRIBUTION = re.compile(r"^\s*--\s*\S.*$|^\s+-\s+\S.*$")
_OVERSTRIKE = re.compile(r".\x08")


def read_fortunes(category: str, folder: str | Path = FORTUNES_DIR, min_chars: int = 20,
                  max_chars: int = 400) -> list[str]:
    """The fortunes of one category file, cleaned: attributions dropped, whitespace collapsed."""
    folder = Path(folder)
    path = folder / category
    if not path.is_file():
        have = sorted(p.name for p in folder.glob("*") if p.is_file() and "." not in p.name) if folder.is_dir() else []
        raise FileNotFoundError(
            f"No fortunes category file {str(path)!r}. Install Debian's 'fortunes' package (scripts/setup.sh does)"
            + (f"; categories here: {', '.join(have[:30])}" if have else "") + "."
        )
    raw = path.read_bytes().decode("utf-8", errors="replace")
    texts, seen = [], set()
    for entry in raw.split("\n%\n"):
        entry = _OVERSTRIKE.sub("", entry)
        lines = [ln for ln in entry.splitlines() if not _ATTRIBUTION.match(ln)]
        text = " ".join(" ".join(lines).split())
        if min_chars <= len(text) <= max_chars and text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def fortunes_splits(topics: Sequence[str] = DEFAULT_TOPICS, *, train_per_topic: int = 48, valid_per_topic: int = 24,
                    test_per_topic: int = 60, seed: int = 0, folder: str | Path = FORTUNES_DIR) -> dict[str, list[dict]]:
    """Balanced train / validation / test rows ``{"text", "label"}`` from fortunes categories."""
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    need = train_per_topic + valid_per_topic + 1
    for topic in topics:
        texts = read_fortunes(topic, folder)
        if len(texts) < need:
            raise ValueError(f"fortunes category {topic!r} has {len(texts)} usable texts; need at least {need}.")
        rng.shuffle(texts)
        a, b = train_per_topic, train_per_topic + valid_per_topic
        splits["train"] += [{"text": t, "label": topic} for t in texts[:a]]
        splits["validation"] += [{"text": t, "label": topic} for t in texts[a:b]]
        splits["test"] += [{"text": t, "label": topic} for t in texts[b:b + test_per_topic]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


# The English category files of Debian's fortunes / fortunes-min packages (fortunes-it and
# others install their own languages' files into the same folder).
ENGLISH_CATEGORIES = (
    "art ascii-art computers cookie debian definitions disclaimer drugs education ethnic food fortunes goedel "
    "humorists kids knghtbrd law linux linuxcookie literature love magic medicine men-women miscellaneous news "
    "paradoxum people perl pets platitudes politics pratchett riddles science songs-poems sports startrek tao "
    "translate-me wisdom work zippy"
).split()


def fortunes_corpus(exclude_texts: Sequence[str] = (), folder: str | Path = FORTUNES_DIR) -> list[str]:
    """Every English fortune (all English category files), minus ``exclude_texts``: an unlabelled corpus."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No fortunes folder {str(folder)!r}. Install Debian's 'fortunes' package (scripts/setup.sh does).")
    excluded = set(exclude_texts)
    texts: list[str] = []
    for name in ENGLISH_CATEGORIES:
        if (folder / name).is_file():
            texts += [t for t in read_fortunes(name, folder, min_chars=10, max_chars=2000) if t not in excluded]
    return texts


def _in_scene(digit: Any, rng: Any, canvas_size: int) -> Any:
    """Paste a dark-on-white digit at a random scale and place into a noisy canvas of a random colour."""
    import numpy as np
    from PIL import Image

    canvas = rng.integers(120, 255, 3)[None, None, :] * np.ones((canvas_size, canvas_size, 3))
    canvas = canvas + rng.normal(0, 25, canvas.shape)
    side = int(rng.integers(canvas_size * 0.3, canvas_size * 0.67))
    paper = np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC)) / 255.0  # 1 = paper, 0 = ink
    y, x = rng.integers(0, canvas_size - side, 2)
    ink = rng.integers(0, 80, 3)[None, None, :]
    region = canvas[y:y + side, x:x + side]
    canvas[y:y + side, x:x + side] = region * paper[..., None] + ink * (1 - paper[..., None])
    return np.clip(canvas, 0, 255).astype(np.uint8)


def scan_image(scan: Any, size: int) -> Any:
    """One 8x8 digit scan (values 0-16) as dark ink on white paper, bicubic to ``size`` pixels (grey uint8)."""
    import numpy as np
    from PIL import Image

    grey = (255 - scan * (255 / 16)).astype(np.uint8)
    return np.asarray(Image.fromarray(grey).resize((size, size), Image.BICUBIC))


def digits_images(per_class: int, test_per_class: int, size: int = 64, seed: int = 0,
                  scene: bool = False) -> tuple[list[dict], list[dict]]:
    """scikit-learn's handwritten digits (real 8x8 scans, 10 classes) as RGB images for image models.

    Each 8x8 grey image (values 0-16) is inverted to dark ink on white paper and upsampled to
    ``size`` pixels with bicubic interpolation. With ``scene=True`` the digit is then pasted at a
    random scale (30-67% of the side) and position into a ``size`` x ``size`` canvas of a random
    light colour with pixel noise, in a random dark ink: the same real strokes, without the
    centred, clean framing that even random convolutional features separate well. Train and
    test rows are drawn per class without overlap.

    Returns:
        ``(train, test)`` lists of ``{"image": uint8 array (size, size, 3), "label": "0".."9"}``.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        if len(idx) < per_class + test_per_class:
            raise ValueError(f"digits: class {label} has {len(idx)} images, fewer than {per_class} + {test_per_class}.")
        for rows, chosen in ((train, idx[:per_class]), (test, idx[per_class:per_class + test_per_class])):
            for i in chosen:
                big = scan_image(digits.images[i], size)
                image = _in_scene(big, rng, size) if scene else np.repeat(big[..., None], 3, axis=2)
                rows.append({"image": image, "label": str(label)})
    order = rng.permutation(len(train))
    return [train[i] for i in order], test


def digits_splits(per_class: int = 10, validation_per_class: int = 20, test_per_class: int = 40, size: int = 64,
                  seed: int = 0, scene: bool = False) -> dict[str, list[dict]]:
    """:func:`digits_images` as ``train`` / ``validation`` / ``test`` splits with no image in two splits."""
    train, held_out = digits_images(per_class, validation_per_class + test_per_class, size=size, seed=seed, scene=scene)
    k = validation_per_class + test_per_class
    return {"train": train, "validation": [r for i, r in enumerate(held_out) if i % k < validation_per_class],
            "test": [r for i, r in enumerate(held_out) if i % k >= validation_per_class]}
