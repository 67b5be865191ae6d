"""The cross-lingual transfer matrix on a tiny espeak-ng corpus and a tiny encoder: cells, resuming, views, rankers."""

import json

import numpy as np
import pytest

from mtransfer.speech import matrix as matrix_module
from mtransfer.speech.matrix import CEILING, SCRATCH, Cell, MatrixSettings, TransferMatrix, run_transfer_matrix


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from mtransfer.builtins.speech_corpus import build_speech_corpus, corpus_splits

    folder = build_speech_corpus(tmp_path_factory.mktemp("matrix-corpus"), ["bn", "hi", "as"], per_language=24, speakers=4,
                                 test_speakers=1, validation_speakers=1, workers=2)
    every = corpus_splits(folder)
    return lambda language: {s: [r for r in rows if r["label"] == language] for s, rows in every.items()}


def settings(model, **kw):
    base = dict(sources=("bn", "hi"), targets=("as", "hi"), seeds=(0,), model=str(model), source_utterances=10,
                target_utterances=4, source_epochs=2, target_epochs=2, scratch_epochs=2, batch_size=4)
    return MatrixSettings(**{**base, **kw})


@pytest.mark.slow
def test_every_cell_runs_once_resumes_and_feeds_the_table_and_the_ranker_check(tiny_corpus, tiny_speech, tmp_path,
                                                                               monkeypatch):
    s = settings(tiny_speech("wav2vec2"))
    lines: list[str] = []
    m = run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, log=lines.append)
    kinds = sorted((c.kind, c.language, c.init) for c in m.cells)
    # 2 sources; per target: random init, ceiling, and a transfer from every other source (hi -> hi is the ceiling)
    assert kinds == [("ceiling", "as", "random"), ("ceiling", "hi", "random"), ("scratch", "as", "random"),
                     ("scratch", "hi", "random"), ("source", "bn", "random"), ("source", "hi", "random"),
                     ("transfer", "as", "bn"), ("transfer", "as", "hi"), ("transfer", "hi", "bn")]
    assert len(lines) == 9 and all(0 <= c.results["test_cer"] for c in m.cells)
    transfer = next(c for c in m.cells if c.kind == "transfer" and c.init == "bn")
    assert transfer.results["copied_rows"] >= 3  # blank, unknown and the word delimiter at least
    assert transfer.train_utterances == 4 and next(c for c in m.cells if c.kind == "source").train_utterances == 10
    table = m.table().splitlines()
    assert table[0] == f"| target \\ start | bn | hi | {SCRATCH} | {CEILING} |"
    assert table[2].startswith("| as | ") and table[3].split(" | ")[2] == "—"  # hi's own transfer is not run
    assert (tmp_path / "m" / "matrix.png").stat().st_size > 1000 and (tmp_path / "m" / "matrix.md").is_file()
    again = TransferMatrix.load(tmp_path / "m")
    assert again.table() == m.table() and again.settings == s

    # a rerun reads every finished cell and trains nothing
    monkeypatch.setattr(matrix_module, "_run_cell", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    assert run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, log=None).table() == m.table()

    reduction = m.reduction("as")
    scratch = m.runs("scratch", "as")[0]
    assert reduction == pytest.approx({src: scratch - m.runs("transfer", "as", src)[0] for src in ("bn", "hi")})


def test_the_ranker_check_counts_hits_regret_and_pools_over_targets():
    s = MatrixSettings(sources=("bn", "hi", "de"), targets=("as", "mr"), seeds=(0, 1), source_utterances=10,
                       target_utterances=4)
    cer = {("as", "bn"): (0.30, 0.32), ("as", "hi"): (0.40, 0.38), ("as", "de"): (0.60, 0.62),
           ("mr", "bn"): (0.45, 0.43), ("mr", "hi"): (0.30, 0.28), ("mr", "de"): (0.55, 0.57)}
    cells = [Cell("scratch", t, "random", k, 4, {"test_cer": 0.9, "test_wer": 1.0}) for t in ("as", "mr") for k in (0, 1)]
    cells += [Cell("transfer", t, src, k, 4, {"test_cer": v[k], "test_wer": 1.0}) for (t, src), v in cer.items()
              for k in (0, 1)]
    m = TransferMatrix(s, cells)
    assert m.reduction("as") == pytest.approx({"bn": 0.59, "hi": 0.51, "de": 0.29})
    lid = {"as": {"bn": 0.7, "hi": 0.2, "de": 0.1}, "mr": {"bn": 0.5, "hi": 0.4, "de": 0.1}}  # right for as, wrong for mr
    check = m.check_ranker(lid)
    assert check["per_target"]["as"]["top1_hit"] is True and check["per_target"]["as"]["regret"] == 0
    assert check["per_target"]["mr"]["top1_hit"] is False
    assert check["per_target"]["mr"]["regret"] == pytest.approx(0.15)  # picked bn (0.46 reduction) over hi (0.61)
    assert check["pooled"]["top1_hit"]["mean"] == 0.5 and check["pooled"]["regret"]["mean"] == pytest.approx(0.075)
    lo, hi = check["pooled"]["kendall_tau"]["ci"]
    assert lo <= check["pooled"]["kendall_tau"]["mean"] <= hi
    table = m.table()
    assert "| as | **0.310 ± 0.014** | 0.390 ± 0.014 | 0.610 ± 0.014 | 0.900 ± 0.000 | — |" in table
    assert np.isnan(m.mean_matrix()[0, -1])  # no ceiling runs given
    with pytest.raises(ValueError, match="no target has scores"):
        m.check_ranker({"xx": {"bn": 1.0}})


@pytest.mark.parametrize("change, message", [
    (dict(seeds=()), "MatrixSettings.seeds is empty"),
    (dict(sources=("bn", "bn")), "each once"),
    (dict(units="words"), "expected 'characters' or 'phones'"),
    (dict(target_utterances=300), "the small budget \\(300 utterances\\) must be below the large one \\(300\\)"),
    (dict(source_epochs=0), "MatrixSettings.source_epochs=0: expected an integer >= 1"),
])
def test_settings_are_checked(change, message):
    with pytest.raises(ValueError, match=message):
        MatrixSettings(**change)


def test_the_cell_files_name_kind_start_target_and_seed():
    assert Cell("transfer", "as", "bn", 1, 30).path == "cells/transfer/bn-to-as/seed1.json"
    assert Cell("scratch", "as", "random", 0, 30).path == "cells/scratch/as/seed0.json"
    assert json.loads(json.dumps(MatrixSettings().__dict__, default=list))["targets"] == ["as", "mr", "ne", "it", "pt"]


@pytest.mark.slow
def test_one_command_ranks_trains_on_the_best_source_and_adapts(tiny_corpus, tiny_speech, tmp_path, capsys):
    import csv

    import mtransfer as mt
    from mtransfer.cli import main

    def write(language, split, path):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["audio", "transcript"])
            w.writeheader()
            w.writerows({"audio": r["audio"], "transcript": r["transcript"]} for r in tiny_corpus(language)[split])
        return str(path)

    files = {lang: ",".join(write(lang, s, tmp_path / f"{lang}_{s}.csv") for s in ("train", "validation", "test"))
             for lang in ("bn", "hi", "as")}
    out = tmp_path / "adapt"
    code = main(["adapt-speech", "--source", f"bn={files['bn']}", "--source", f"hi={files['hi']}", "--target", files["as"],
                 "--target-utterances", "5", "--model", str(tiny_speech("wav2vec2")), "--source-epochs", "1",
                 "--target-epochs", "1", "--batch-size", "4", "--output-dir", str(out), "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "adapt.json").read_text())
    assert printed["source"] == report["source"] == report["ranking"][0]["source"]
    assert {r["source"] for r in report["ranking"]} == {"bn", "hi"} and report["scorer"] == "mfcc"
    assert sorted(p.name for p in out.iterdir()) == ["adapt.json", f"source-{report['source']}", "target"]  # one source trained
    assert report["target_results"]["train_utterances"] == 5 and report["target_results"]["scored_on"] == "test"
    assert report["target_results"]["copied_rows"] >= 3
    adapted = mt.TransferModel.from_pretrained(report["model_dir"])
    assert adapted.task == "ctc" and isinstance(adapted.transcribe(tiny_corpus("as")["test"][0]["audio"]), str)
    assert main(["adapt-speech", "--source", f"bn={files['bn']}", "--target", files["as"], "--output-dir",
                 str(tmp_path / "x")]) == 2
    assert "give at least two candidate sources" in capsys.readouterr().err
    assert main(["adapt-speech", "--source", "bn=a.csv", "--source", "hi=b.csv", "--target", files["as"],
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "expected builtin:espeak-asr-LANG or TRAIN,VALIDATION[,TEST] files" in capsys.readouterr().err
