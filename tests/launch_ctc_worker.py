"""Run under `accelerate launch` by tests/test_multiprocess.py: trains a tiny wav2vec2 CTC model, records shards."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mtransfer as mt  # noqa: E402
from tests.launch_worker import ShardRecorder  # noqa: E402
from tests.test_speech import clip  # noqa: E402

TEXTS = ["ab ba", "abc", "cab cc", "ba", "a bc ab", "cc a b", "b a", "ac", "bb ca", "c", "a", "abc ab"]


def data(texts):
    rows = [{"audio": clip(i), "text": t} for i, t in enumerate(texts)]
    return mt.load_labeled(rows, input_column="audio", label_column="text", task="ctc")


def main(speech: str, out: str) -> None:
    train = data(TEXTS)
    model = mt.TransferModel.from_backbone("audio", speech, labels=train.vocabulary, task="ctc", seed=0)
    args = mt.TrainingArguments(output_dir=out, strategy="two_stage", num_epochs=2, head_epochs=1, learning_rate=3e-3,
                                batch_size=3, eval_batch_size=2, progress_bar=False, report_to=[], plot=False)
    recorder = ShardRecorder()
    trainer = mt.Trainer(model, args, train, data(TEXTS[:7]), callbacks=[recorder])  # 7: uneven over 2 processes
    trainer.train()
    acc = trainer.accelerator
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps({
        "world": acc.num_processes, "distributed_type": str(acc.distributed_type), "seen": recorder.seen}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
