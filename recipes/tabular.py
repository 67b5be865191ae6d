"""Deep features beside a table's columns, with the extraction spread over every process.

    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/tabular.py \
        --train builtin:digit-scans --output-dir outputs/tabular-digits

Takes the flags of `mtransfer tabular` (see `mtransfer tabular --help`). Each process extracts its
share of every text / image / audio column's feature-cache shards on its own device (the part
that scales); then the main process cross-validates the boosters, which read the cache, fits the
final model and writes the comparison. On one process it is `mtransfer tabular`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch
    from accelerate import Accelerator

    from mtransfer.cli import build_parser, cmd_tabular
    from mtransfer.tabular import TabularModel, read_table, tabular_settings

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(["tabular", *argv])
    try:  # bad flags, columns or files: one line and exit 2, before any extraction
        target, task, columns, settings = tabular_settings(a)
        frame = read_table(a.train, a.limit, a.seed, "--train")
        model = TabularModel(task, **columns, seed=a.seed, **settings)
        model._check(frame, f"--train {a.train}", frame[target] if target in frame.columns else None)
        if target not in frame.columns:
            raise ValueError(f"--target {target!r}: no such column in {a.train}.")
        if a.test:
            test = read_table(a.test, None, a.seed, "--test")
            model._check(test, f"--test {a.test}", test[target] if target in test.columns else None)
    except (ValueError, OSError) as err:
        print(f"recipes/tabular.py: error: {err}", file=sys.stderr)
        return 2
    acc = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True: real process groups on a CPU machine
    model.column_features(frame, where=f"--train {a.train}", process_index=acc.process_index,
                          num_processes=acc.num_processes, wait=acc.wait_for_everyone, device=acc.device)
    code = cmd_tabular(a) if acc.is_main_process else 0  # every feature is cached now: boosting only
    acc.wait_for_everyone()
    acc.end_training()
    return code


if __name__ == "__main__":
    sys.exit(main())
