"""Every bad input a new user met answers in one line, with exit code 2, before any work starts.

Each case was reproduced on the earlier main: a traceback, a message about the Hub for a missing
file, "Instruction train corresponds to no data", a silently dropped source, a TypeError after
the data was loaded, and so on. The message each now prints is asserted.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

import mtransfer as mt
from mtransfer.cli import main
from tests.test_cli import write_csv

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "configs"


@pytest.fixture(scope="module")
def setup(tiny_bert, topic_data, tmp_path_factory):
    """A trained tiny model (with its checkpoints) and the bad files every case reads."""
    root = tmp_path_factory.mktemp("bad-inputs")
    train = write_csv(root / "train.csv", topic_data[0])
    run = root / "run"
    assert main(["train", "--model", str(tiny_bert), "--train", str(train), "--output-dir", str(run), "--epochs", "1",
                 "--strategy", "frozen", "--no-progress", "--set", "report_to=none", "--set", "plot=false"]) == 0
    (root / "header.csv").write_text("text,label\n")
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,food\nthe tea,food\n".encode("latin-1"))
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "notmodel").mkdir()
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    (root / "bad.yaml").write_text("model:\n  modality: text\n training: [\n")
    from PIL import Image

    (root / "oneclass" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "oneclass" / "cat" / f"{i}.png")
    (root / "one_wav").mkdir()
    shutil.copy(Path(mt.__file__).parent.parent / "tests" / "__init__.py", root / "one_wav" / "a.wav")
    for name in ("nobackbone", "badconfig", "corrupt"):
        shutil.copytree(run / "model", root / name)
    shutil.rmtree(root / "nobackbone" / "backbone")
    (root / "badconfig" / "config.json").write_text('{"mtransfer_format": 1, "adapter_type": ')
    weights = (root / "corrupt" / "model.safetensors").read_bytes()
    (root / "corrupt" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for name in ("truncated_backbone", "unknown_key", "newer"):
        shutil.copytree(run / "model", root / name)
    weights = root / "truncated_backbone" / "backbone" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    for name, change in (("unknown_key", {"adapter": {"max_lenght": 8}}),
                         ("newer", {"mtransfer_format": 2, "mtransfer_version": "0.4.0"})):
        config = json.loads((root / name / "config.json").read_text())
        config.update({k: {**config[k], **v} if isinstance(v, dict) else v for k, v in change.items()})
        (root / name / "config.json").write_text(json.dumps(config))
    (root / "matrix").mkdir()
    (root / "matrix" / "settings.json").write_text(json.dumps({"target_epochs": 3}))
    (root / "export").mkdir()
    (root / "export" / "notes.txt").write_text("mine")
    relabelled = [dict(r, label=r["label"] + "x") for r in topic_data[0]]
    return {"root": root, "train": str(train), "run": run, "bert": str(tiny_bert),
            "train2": str(write_csv(root / "train2.csv", relabelled))}


def _train(s, *extra):
    return ["train", "--model", s["bert"], "--output-dir", str(s["root"] / "out"), "--epochs", "1", "--strategy", "frozen",
            "--no-progress", "--set", "report_to=none", *extra]


CASES = {
    "missing train file": (lambda s: _train(s, "--train", "nope.csv"), "nope.csv: no such file or folder."),
    "header-only CSV": (lambda s: _train(s, "--train", str(s["root"] / "header.csv")), "header.csv: the file has a header but no rows."),
    "non-UTF-8 CSV": (lambda s: _train(s, "--train", str(s["root"] / "latin1.csv")),
                      "latin1.csv: not UTF-8 text (line 2, byte 14: invalid continuation byte)"),
    "non-UTF-8 TXT": (lambda s: ["predict", "--model-dir", str(s["run"] / "model"), "--input", str(s["root"] / "latin1.txt")],
                      "latin1.txt: not UTF-8 text (byte 3: invalid continuation byte); save it as UTF-8."),
    "not a model folder": (lambda s: ["predict", "--model-dir", str(s["root"] / "notmodel"), "--input", "-"],
                           "notmodel: not an mtransfer model folder (no config.json)"),
    "model folder without backbone/": (lambda s: ["predict", "--model-dir", str(s["root"] / "nobackbone"), "--input", "-"],
                                       "nobackbone: the model folder has no backbone/ sub-folder"),
    "corrupt config.json": (lambda s: ["predict", "--model-dir", str(s["root"] / "badconfig"), "--input", "-"],
                            "badconfig/config.json: not valid JSON (Expecting value: line 1 column 41"),
    "truncated model.safetensors": (lambda s: ["predict", "--model-dir", str(s["root"] / "corrupt"), "--input", "-"],
                                    "corrupt/model.safetensors: not a readable safetensors file (truncated"),
    "image folder with one class": (lambda s: _train(s, "--modality", "image", "--train", str(s["root"] / "oneclass")),
                                    "labels come from class sub-folders, and this folder has only one ('cat')"),
    "source with one file": (lambda s: ["rank-sources", "--source", f"a={s['root'] / 'one_wav'}", "--source",
                                        f"b={s['root'] / 'one_wav'}", "--target", f"t={s['root'] / 'one_wav'}"],
                             "sources with too few inputs {'a': 1, 'b': 1}: each source needs at least 4"),
    "duplicate --source names": (lambda s: ["rank-sources", "--source", f"a={s['root'] / 'one_wav'}", "--source",
                                            f"a={s['root'] / 'one_wav'}", "--target", f"t={s['root'] / 'one_wav'}"],
                                 "--source: the name 'a' is given twice"),
    "--bootstrap -1": (lambda s: ["rank-sources", "--source", "a=x", "--source", "b=y", "--target", "t", "--bootstrap", "-1"],
                       "argument --bootstrap: -1 is not >= 0"),
    "predict --batch-size 0": (lambda s: ["predict", "--model-dir", str(s["run"] / "model"), "--batch-size", "0"],
                               "argument --batch-size: 0 is not >= 1"),
    "--estimators ''": (lambda s: ["rank-models", "--model", s["bert"], "--data", s["train"], "--estimators", ""],
                        "--estimators '': name at least one of logme, hscore, knn."),
    "--hidden-sizes abc": (lambda s: _train(s, "--train", s["train"], "--hidden-sizes", "abc"),
                           "argument --hidden-sizes: 'abc': expected comma-separated positive widths"),
    "unknown NAME=PREFIX:PATH": (lambda s: ["rank-models", "--model", f"x=txet:{s['bert']}", "--data", s["train"]],
                                 "unknown modality prefix 'txet'; expected one of text, sentence, static_vectors, image"),
    "rank-models option poling=cls": (lambda s: ["rank-models", "--model", f"x={s['bert']},poling=cls", "--data", s["train"]],
                                      "candidate 'x': unknown key poling for the text adapter (did you mean pooling?)"),
    "--adapter max_lenght=8": (lambda s: _train(s, "--train", s["train"], "--adapter", "max_lenght=8"),
                               "unknown key model.adapter.max_lenght for the text adapter (did you mean model.adapter.max_length?)"),
    "model.head.hiden_sizes=[8]": (lambda s: ["train", "--config", str(RECIPES / "text" / "probe.yaml"), "model.head.hiden_sizes=[8]"],
                                   "unknown key model.head.hiden_sizes (did you mean model.head.hidden_sizes?)"),
    "--resume after the labels changed": (lambda s: ["train", "--model", s["bert"], "--train", s["train2"], "--output-dir",
                                                     str(s["run"]), "--epochs", "1", "--strategy", "frozen", "--resume",
                                                     "--set", "report_to=none"],
                                          "it was written by a different run (labels ['food', 'science', 'sport'] -> "
                                          "['foodx', 'sciencex', 'sportx'])"),
    "binary file as --config": (lambda s: ["train", "--config", str(s["root"] / "binary.yaml")],
                                "binary.yaml: not a text (UTF-8) YAML file (byte 128 cannot be decoded)."),
    "YAML that does not parse": (lambda s: ["train", "--config", str(s["root"] / "bad.yaml")],
                                 "bad.yaml: line 3, column 2: not valid YAML"),
    "push --repo-id 'bad id!!'": (lambda s: ["push", "--folder", str(s["run"] / "model"), "--repo-id", "bad id!!", "--dry-run"],
                                  "--repo-id 'bad id!!': not a valid Hub repo id"),
    "rank-models --model of one name twice": (lambda s: ["rank-models", "--model", f"a={s['bert']}", "--model",
                                                         f"a={s['bert']},pooling=cls", "--data", s["train"]],
                                              "--model: the name 'a' is given twice; name each one once (NAME=PATH)."),
    "rank-sources --target of one name twice": (lambda s: ["rank-sources", "--source", f"a={s['root'] / 'one_wav'}",
                                                           "--source", f"b={s['root'] / 'one_wav'}", "--target",
                                                           f"t={s['root'] / 'one_wav'}", "--target", f"t={s['root']}"],
                                                "--target: the name 't' is given twice; name each one once (NAME=PATH)."),
    "export into the model folder": (lambda s: ["export", "--model-dir", str(s["run"] / "model"), "--output",
                                                str(s["run"] / "model"), "--overwrite"],
                                     "model: is the model folder"),
    "export inside the model folder": (lambda s: ["export", "--model-dir", str(s["run"] / "model"), "--output",
                                                  str(s["run"] / "model" / "backbone"), "--overwrite"],
                                       "backbone: is inside the model folder"),
    "export into a folder holding the model": (lambda s: ["export", "--model-dir", str(s["run"] / "model"), "--output",
                                                          str(s["run"]), "--overwrite"],
                                               "contains the model folder"),
    "truncated backbone/model.safetensors": (lambda s: ["predict", "--model-dir", str(s["root"] / "truncated_backbone"),
                                                        "--input", "-"],
                                             "truncated_backbone/backbone/model.safetensors: not a readable safetensors "
                                             "file (truncated"),
    "unknown key under adapter in config.json": (lambda s: ["predict", "--model-dir", str(s["root"] / "unknown_key"),
                                                            "--input", "-"],
                                                 "unknown_key/config.json: unknown key adapter.max_lenght for the text "
                                                 "adapter (did you mean adapter.max_length?)"),
    "a model format newer than this version": (lambda s: ["evaluate", "--model-dir", str(s["root"] / "newer"), "--data",
                                                          s["train"]],
                                               "newer/config.json: written by mtransfer 0.4.0 in model format 2; this "
                                               "mtransfer (0.1.0) reads format 1 at most. Upgrade mtransfer to open it."),
    "export into a non-empty folder": (lambda s: ["export", "--model-dir", str(s["run"] / "model"), "--output",
                                                  str(s["root"] / "export")],
                                       "export: the folder is not empty (notes.txt); pass --overwrite"),
}


def run_cli(argv: list[str]) -> int:
    """``main`` as the console script runs it: argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, setup, capsys):
    argv, expected = CASES[case]
    code = run_cli(argv(setup))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (setup["root"] / "out").exists()  # nothing started: no run folder


def test_export_over_its_own_model_folder_leaves_the_model_whole(setup, capsys):
    """On the earlier main, --output RUN/model --overwrite replaced the model's config.json and model.safetensors, then
    crashed (KeyError: 'adapter_type'): the model was gone."""
    model_dir = setup["run"] / "model"
    before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    for output in (model_dir, model_dir / "backbone", setup["run"]):
        assert run_cli(["export", "--model-dir", str(model_dir), "--output", str(output), "--overwrite"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"mtransfer export: error: --output {model_dir}: is the model folder {model_dir} the export reads; "
                      "writing there would replace the model's own files. Choose a folder outside it (e.g. a sibling "
                      "'export').")
    assert {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="is inside the model folder"):  # the Python API refuses it too
        from mtransfer.export import export_transformers

        export_transformers(mt.TransferModel.from_pretrained(model_dir), model_dir / "x", overwrite=True)
    assert not (model_dir / "x").exists()


def test_export_never_deletes_what_it_did_not_write(setup, capsys):
    folder = setup["root"] / "export"
    assert main(["export", "--model-dir", str(setup["run"] / "model"), "--output", str(folder), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "config.json").is_file()


def test_a_second_run_in_a_locked_folder_says_who_holds_it(setup, capsys, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    (out / ".mtransfer.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "2026-11-27 15:00:00"}))
    argv = _train(setup, "--train", setup["train"])
    argv[argv.index("--output-dir") + 1] = str(out)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{out} is in use by another run (process 1 on {socket.gethostname()}, since 2026-11-27 15:00:00)" in err
    assert sorted(p.name for p in out.iterdir()) == [".mtransfer.lock"]  # the other run's folder is untouched


def test_a_stale_lock_is_taken_over_and_released(setup, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    (out / ".mtransfer.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    argv = _train(setup, "--train", setup["train"])
    argv[argv.index("--output-dir") + 1] = str(out)
    assert main(argv) == 0
    assert not (out / ".mtransfer.lock").exists() and (out / "model").is_dir()


def test_disk_full_is_one_line_and_leaves_no_hidden_files(setup, tmp_path, capsys, monkeypatch):
    import errno

    import mtransfer.model

    out = tmp_path / "full"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mtransfer.model, "save_file", full)
    argv = _train(setup, "--train", setup["train"], "--set", "save_checkpoints=false")
    argv[argv.index("--output-dir") + 1] = str(out)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtransfer train: error: disk full") and len(err.splitlines()) == 1
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no hidden .tmp left, lock released


def test_a_full_disk_under_safetensors_is_one_line(setup, tmp_path, capsys, monkeypatch):
    """safetensors' own error (SafetensorError ... No space left on device) is not an OSError: it printed a traceback."""
    from safetensors import SafetensorError

    import mtransfer.cache

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                              "left on device\" })")

    monkeypatch.setattr(mtransfer.cache, "save_file", full)
    argv = _train(setup, "--train", setup["train"], "--set", f"cache_dir={tmp_path / 'cache'}")
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "full")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mtransfer train: error: disk full; nothing half-written was kept: free some space or choose another "
                   "folder.")
    assert not list((tmp_path / "cache").rglob("*.safetensors")) and not list((tmp_path / "cache").rglob("*.tmp"))


def test_the_matrix_scripts_own_refusals_are_one_line(setup):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "transfer_matrix.py"), "--output-dir",
                           str(setup["root"] / "matrix")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"transfer_matrix.py: error: {setup['root'] / 'matrix'} holds a "
                                                          "matrix trained with other settings (")
    assert "target_epochs: 3 there, 30 now" in err
