"""Run under `accelerate launch` by tests/test_multiprocess.py: trains the tiny BERT, records shards."""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import mtransfer as mt  # noqa: E402
from tests.tiny import topic_examples  # noqa: E402


class ShardRecorder(mt.TrainerCallback):
    def __init__(self):
        self.seen: dict[int, list[int]] = {}

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch + 1

    def on_step_end(self, trainer, batch):
        self.seen.setdefault(self.epoch, []).extend(batch["indices"].tolist())


def main(bert: str, out: str) -> None:
    rng = random.Random(0)
    train = mt.load_labeled(topic_examples(rng, 32))  # 96 rows: 6 batches of 16, 3 per process
    val = mt.load_labeled(topic_examples(rng, 21), label_names=train.label_names)  # 63 rows: uneven on purpose
    model = mt.TransferModel.from_backbone("text", bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=out, strategy="two_stage", num_epochs=2, learning_rate=1e-3,
                                batch_size=16, eval_batch_size=8, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints=True)
    recorder = ShardRecorder()
    trainer = mt.Trainer(model, args, train, val, callbacks=[recorder])
    trainer.train()
    acc = trainer.accelerator
    checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps({
        "rank": acc.process_index, "world": acc.num_processes, "distributed_type": str(acc.distributed_type),
        "seen": recorder.seen, "checksum": checksum, "torch_threads": torch.get_num_threads(),
        "head_choice": trainer.head_choice,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
