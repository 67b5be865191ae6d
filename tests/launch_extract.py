"""Run under `accelerate launch` by tests/test_cache.py: extract features with every process."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator  # noqa: E402

from mtransfer.adapters.text import TextAdapter  # noqa: E402
from mtransfer.cache import FeatureCache  # noqa: E402
from tests.tiny import extraction_texts  # noqa: E402


def main(bert: str, root: str) -> None:
    acc = Accelerator(cpu=True)
    adapter = TextAdapter(bert)
    written: list[int] = []
    FeatureCache(root, shard_size=8).features(adapter, extraction_texts(), batch_size=5,
                                              process_index=acc.process_index, num_processes=acc.num_processes,
                                              wait=acc.wait_for_everyone, on_shard=written.append)
    Path(root, f"written{acc.process_index}.txt").write_text(",".join(map(str, written)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
