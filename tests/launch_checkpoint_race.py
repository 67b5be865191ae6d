"""Run under `accelerate launch` by tests/test_checkpoints.py: every checkpoint save of rank 1 starts late.

On the earlier main, rank 0 renamed ``.epoch_N.tmp`` as soon as its own part was written, and rank 1 then wrote
its random-number states into a folder that no longer existed (seen once under load in CI).
"""

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accelerate  # noqa: E402

import mtransfer as mt  # noqa: E402
from tests.tiny import topic_examples  # noqa: E402

original_save_state = accelerate.Accelerator.save_state


def late_save_state(self, *args, **kwargs):
    if self.process_index == 1:
        time.sleep(float(sys.argv[3]))  # rank 0 is long done with its own part
    return original_save_state(self, *args, **kwargs)


accelerate.Accelerator.save_state = late_save_state


def main(bert: str, out: str) -> None:
    rng = random.Random(0)
    train = mt.load_labeled(topic_examples(rng, 8))
    val = mt.load_labeled(topic_examples(rng, 4), label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=out, strategy="full", num_epochs=2, learning_rate=1e-3, batch_size=8,
                                progress_bar=False, report_to=[], plot=False, save_checkpoints="all")
    trainer = mt.Trainer(model, args, train, val)
    trainer.train()
    Path(out, f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps({"done": True}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
