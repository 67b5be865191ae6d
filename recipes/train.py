"""Train from a recipe config: the same code on one process or many.

    accelerate launch --config_file recipes/accelerate/cpu_1proc.yaml recipes/train.py \
        --config recipes/configs/text/two_stage.yaml training.num_epochs=6 model.adapter.max_length=64

Every argument after --config is a section.key=value override (see mtransfer.config). Hub ids
download as usual; set HF_HUB_OFFLINE=1 yourself to work from the local cache only.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtransfer.config import load_recipe_config, run_recipe  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a YAML file under recipes/configs/")
    p.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE")
    a = p.parse_args(argv)
    try:
        config = load_recipe_config(a.config, a.overrides)
    except (ValueError, OSError) as err:  # before any loading: one line, exit 2
        print(f"recipes/train.py: error: {err}", file=sys.stderr)
        return 2
    out = run_recipe(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
