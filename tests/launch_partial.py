"""Run under `accelerate launch` by tests/test_partial_cache.py: last-1 training of the tiny BERT with the partial
cache on or off (argv[3]: partial_cache_gb); each rank records what it saw and trained."""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mtransfer as mt  # noqa: E402
from tests.tiny import topic_examples  # noqa: E402


def main(bert: str, out: str, partial_gb: str) -> None:
    rng = random.Random(0)
    train = mt.load_labeled(topic_examples(rng, 32))  # 96 rows: 6 batches of 16, 3 per process
    val = mt.load_labeled(topic_examples(rng, 21), label_names=train.label_names)  # 63 rows: uneven on purpose
    model = mt.TransferModel.from_backbone("text", bert, labels=train.label_names, seed=0)
    args = mt.TrainingArguments(output_dir=out, strategy="last_n", last_n=1, num_epochs=2, learning_rate=3e-3,
                                batch_size=16, eval_batch_size=8, progress_bar=False, report_to=[], plot=False,
                                save_checkpoints="none", cache_dir=str(Path(out).parent / "cache"),
                                partial_cache_gb=float(partial_gb))
    trainer = mt.Trainer(model, args, train, val)
    trainer.train()
    acc = trainer.accelerator
    checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps({
        "rank": acc.process_index, "world": acc.num_processes, "checksum": checksum,
        "partial_cache": trainer.partial_cache}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
