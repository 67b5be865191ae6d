"""mtransfer.locks: one run per output folder; a dead holder's lock is taken over."""

import json
import os
import socket

import pytest

from mtransfer.locks import LOCK_FILE, OutputLockedError, acquire, output_lock


def test_a_held_folder_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    path = acquire(tmp_path / "run")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(OutputLockedError, match=f"in use by another run \\(process {os.getpid()} on "):
        acquire(tmp_path / "run")
    path.unlink()
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))
    assert json.loads(acquire(tmp_path / "run").read_text())["pid"] == os.getpid()  # taken over


def test_the_lock_is_released_when_the_block_ends_even_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "run"):
            assert (tmp_path / "run" / LOCK_FILE).is_file()
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / LOCK_FILE).exists()
