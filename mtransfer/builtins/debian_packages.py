"""A real offline table with a text column: Debian's package index (``apt-cache dumpavail``).

One row per package: its one-line ``description`` (the text column), categorical columns
(``section``, ``priority``, ``architecture``, ``multi_arch``), numeric columns (counts of
``Depends`` / ``Recommends`` / ``Suggests`` entries and of debtags, length of the name) and the
target ``log_installed_size`` (natural log of ``Installed-Size`` in KiB). The download size is
left out: it is nearly the target itself. Packages are sampled with a fixed seed.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
from typing import Any

COUNTED = {"Depends": "n_depends", "Recommends": "n_recommends", "Suggests": "n_suggests"}


def _records(text: str) -> list[dict[str, str]]:
    records, current, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        records.append(current)
    return records


def packages_table(limit: int | None = 3000, seed: int = 0) -> Any:
    """The package index as a DataFrame (``limit`` packages sampled with ``seed``; None: all)."""
    import pandas as pd

    try:
        text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True, timeout=300).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"builtin:debian-packages reads `apt-cache dumpavail` (Debian/Ubuntu): {err}") from None
    rows, seen = [], set()
    for r in _records(text):
        name, size, desc = r.get("Package"), r.get("Installed-Size"), r.get("Description")
        if not name or name in seen or not size or not size.isdigit() or not desc:
            continue
        seen.add(name)
        row = {"package": name, "description": desc, "section": r.get("Section", "unknown").split("/")[-1],
               "priority": r.get("Priority", "unknown"), "architecture": r.get("Architecture", "unknown"),
               "multi_arch": r.get("Multi-Arch", "none"), "name_length": len(name),
               "n_tags": len([t for t in r.get("Tag", "").split(",") if t.strip()]),
               "log_installed_size": math.log(int(size) + 1)}
        for field, column in COUNTED.items():
            row[column] = len([d for d in re.split(r",", r.get(field, "")) if d.strip()])
        rows.append(row)
    if not rows:
        raise RuntimeError("`apt-cache dumpavail` listed no packages: run `apt-get update` first.")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return pd.DataFrame(rows)


NUMERIC = ["n_depends", "n_recommends", "n_suggests", "n_tags", "name_length"]
CATEGORICAL = ["section", "priority", "architecture", "multi_arch"]
