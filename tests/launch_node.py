"""Run under `accelerate launch` (one "node" of a multi-node run) by tests/test_multinode.py: `mtransfer train` with
its arguments, recording which files this process creates or renames under the shared folder, and, when
``MTRANSFER_TEST_KILL_EPOCH`` is set, killing itself (SIGKILL, no cleanup) at the end of that epoch on the process
whose global rank is ``MTRANSFER_TEST_KILL_RANK`` (after the epoch's checkpoint is committed)."""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(os.environ["MTRANSFER_TEST_SHARED"]).resolve()
RANK = int(os.environ.get("RANK", "0"))
written: set[str] = set()


def audit(event: str, args: tuple) -> None:
    """Every file this process opens for writing, and every rename target, under the shared folder."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        target = path
    elif event == "os.rename":
        writing, target = True, args[1]
    else:
        return
    if writing and isinstance(target, (str, os.PathLike)):
        p = Path(os.fsdecode(target))
        p = p if p.is_absolute() else Path.cwd() / p
        if str(p).startswith(str(SHARED)):
            written.add(str(p.relative_to(SHARED)))


def main(argv: list[str]) -> int:
    sys.addaudithook(audit)
    import mtransfer as mt
    from mtransfer.cli import main as cli_main

    kill_epoch = os.environ.get("MTRANSFER_TEST_KILL_EPOCH")
    if kill_epoch is not None and RANK == int(os.environ.get("MTRANSFER_TEST_KILL_RANK", "1")):
        class Kill(mt.TrainerCallback):
            def on_epoch_end(self, trainer, epoch, record):
                if epoch + 1 == int(kill_epoch):  # epochs count across phases
                    os.kill(os.getpid(), signal.SIGKILL)

        original = mt.Trainer.__init__

        def with_kill(self, *a, **k):
            original(self, *a, **k)
            self.callbacks.append(Kill())

        mt.Trainer.__init__ = with_kill
    code = cli_main(argv)
    (SHARED / "audit").mkdir(exist_ok=True)
    Path(SHARED / "audit" / f"rank{RANK}.json").write_text(json.dumps(sorted(written)))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
