"""mtransfer.atomic: outputs appear whole or not at all, follow the umask, and JSON errors name the file."""

import os

import pytest

from mtransfer.atomic import atomic_directory, atomic_write_json, fix_permissions, read_json


def test_an_interrupted_folder_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("second, half-written")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_files_follow_the_umask_and_json_errors_name_the_file(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750 and (tmp_path / "d" / "x").stat().st_mode & 0o777 == 0o640
    assert read_json(tmp_path / "r.json", "record") == {"a": 1}
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON .*; the run record is damaged"):
        read_json(tmp_path / "bad.json", "run record")
    with pytest.raises(FileNotFoundError, match=r"missing.json: no run record \(written by train\)"):
        read_json(tmp_path / "missing.json", "run record", "written by train")
    fix_permissions(tmp_path / "r.json")  # a file alone, too
