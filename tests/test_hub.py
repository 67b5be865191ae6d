"""mtransfer.hub: repo ids, the upload plan, and a dry run that sends nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtransfer.cli import main
from mtransfer.hub import check_repo_id, push_to_hub, upload_plan
from tests.test_export import run_dir  # noqa: F401  (a trained run whose model folder is pushed)


@pytest.mark.parametrize("repo_id", ["me/my-model", "org.name/model_1", "model"])
def test_valid_repo_ids(repo_id):
    check_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", ["bad id", "a--b/c", "me/x.", "a/b/c", "me/" + "x" * 97, "me/..x"])
def test_invalid_repo_ids_are_refused_in_one_line(repo_id):
    with pytest.raises(ValueError, match="not a valid Hub repo id"):
        check_repo_id(repo_id)


def test_the_upload_plan_leaves_hidden_files_out_and_a_dry_run_sends_nothing(tmp_path, monkeypatch):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "sub" / "w.bin").write_bytes(b"12345")
    (tmp_path / "m" / ".mtransfer.lock").write_text("x")
    assert upload_plan(tmp_path / "m") == [("config.json", 2), ("sub/w.bin", 5)]
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("a dry run reached the Hub"))
    assert push_to_hub(tmp_path / "m", "me/m", dry_run=True) == [("config.json", 2), ("sub/w.bin", 5)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder is empty; nothing to push"):
        upload_plan(tmp_path / "empty")


def test_push_dry_run_lists_exactly_the_files(run_dir, capsys):
    folder = run_dir / "model"
    assert main(["push", "--folder", str(folder), "--repo-id", "me/topic-bert", "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = sorted(line.split()[0] for line in out[1:])
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert listed == expected and "config.json" in listed and "backbone/model.safetensors" in listed
    assert out[0].startswith(f"would upload {len(expected)} files") and "private" in out[0]


def test_push_to_an_unreachable_hub_fails_in_one_line(run_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_secret_token_value"}
    proc = subprocess.run([sys.executable, "-m", "mtransfer.cli", "push", "--folder", str(run_dir / "model"),
                           "--repo-id", "me/topic-bert"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtransfer push: error: Cannot push") and "127.0.0.1:9" in err[0]
    assert "Traceback" not in proc.stderr and "hf_secret_token_value" not in proc.stderr + proc.stdout


def test_a_pushed_card_loads_the_repo_not_the_local_folder(run_dir, tmp_path, monkeypatch):
    """A card written without --repo-id loads the folder by its path; pushed as is, that path (the user's
    machine) went to the Hub in the card's example."""
    import huggingface_hub

    folder = tmp_path / "export"
    assert main(["export", "--model-dir", str(run_dir / "model"), "--output", str(folder)]) == 0  # with its card
    card = folder / "README.md"
    assert str(folder) in card.read_text()
    sent = {}

    class FakeApi:
        endpoint = "https://hub.example"

        def __init__(self, *a, **k):
            pass

        def create_repo(self, *a, **k):
            pass

        def create_commit(self, repo_id, operations, **k):
            for op in operations:
                payload = op.path_or_fileobj
                sent[op.path_in_repo] = payload if isinstance(payload, bytes) else Path(payload).read_bytes()
            return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", "--folder", str(folder), "--repo-id", "me/topic-bert"]) == 0
    assert sorted(sent) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    pushed = sent["README.md"].decode()
    assert str(folder) not in pushed and str(tmp_path) not in pushed and '"me/topic-bert"' in pushed
    assert card.read_text() != pushed  # the local card is left as it was
