"""Run under `accelerate launch` by tests/test_contrastive.py: a contrastive run; each rank records the pairs it trained."""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mtransfer as mt  # noqa: E402
from tests.tiny import topic_examples  # noqa: E402


class PairRecorder(mt.TrainerCallback):
    def __init__(self):
        self.seen: dict[int, list[list[int]]] = {}
        self.positions: dict[int, list[int]] = {}

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch + 1

    def on_step_end(self, trainer, batch):
        pairs = trainer.pair_dataset.pairs[batch["indices"]]
        self.seen.setdefault(self.epoch, []).extend(pairs.tolist())
        self.positions.setdefault(self.epoch, []).extend(batch["indices"].tolist())


def main(bert: str, out: str) -> None:
    rng = random.Random(0)
    train = mt.load_labeled(topic_examples(rng, 16))  # 48 rows
    val = mt.load_labeled(topic_examples(rng, 7), label_names=train.label_names)
    model = mt.TransferModel.from_backbone("text", bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=out, strategy="contrastive", num_epochs=2, learning_rate=1e-3,
                                batch_size=8, contrastive_pairs=64, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints="none")
    recorder = PairRecorder()
    trainer = mt.Trainer(model, args, train, val, callbacks=[recorder])
    trainer.train()
    acc = trainer.accelerator
    head = trainer.model.head.out.weight
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps({
        "world": acc.num_processes, "seen": recorder.seen, "positions": recorder.positions, "head": head.flatten().tolist(),
        "checksum": sum(float(p.double().sum()) for p in trainer.model.parameters())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
