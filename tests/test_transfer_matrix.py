"""The cross-lingual transfer matrix on a tiny espeak-ng corpus and a tiny encoder: cells, resuming, views, rankers."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mtransfer.experiments import transfer_matrix as matrix_module
from mtransfer.experiments.transfer_matrix import (CEILING, POOLED, SCRATCH, Cell, CorpusFolder, MatrixSettings, TransferMatrix,
                                     pooled_model_path, run_transfer_matrix, work_cells)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from mtransfer.builtins.speech_corpus import build_speech_corpus

    folder = build_speech_corpus(tmp_path_factory.mktemp("matrix-corpus"), ["bn", "hi", "as"], per_language=24, speakers=4,
                                 test_speakers=1, validation_speakers=1, workers=2)
    return CorpusFolder(folder)  # picklable: worker processes read it too


def settings(model, **kw):
    base = dict(sources=("bn", "hi"), targets=("as", "hi"), seeds=(0,), model=str(model), source_utterances=10,
                target_utterances=4, source_epochs=2, target_epochs=2, scratch_epochs=2, batch_size=4)
    return MatrixSettings(**{**base, **kw})


@pytest.mark.slow
def test_every_cell_runs_once_resumes_and_feeds_the_table_and_the_ranker_check(tiny_corpus, tiny_speech, tmp_path,
                                                                               monkeypatch):
    s = settings(tiny_speech("wav2vec2"), target_validation=2)
    lines: list[str] = []
    m = run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, log=lines.append)
    kinds = sorted((c.kind, c.language, c.init) for c in m.cells)
    # 2 sources and their pooled model; per target: random init, ceiling, and a transfer from every other source
    # (hi -> hi is the ceiling)
    assert kinds == [("ceiling", "as", "random"), ("ceiling", "hi", "random"), ("pooled", f"{POOLED}-bn-hi", "random"),
                     ("scratch", "as", "random"), ("scratch", "hi", "random"), ("source", "bn", "random"),
                     ("source", "hi", "random"), ("transfer", "as", "bn"), ("transfer", "as", "hi"),
                     ("transfer", "hi", "bn")]
    assert len(lines) == 10 + 1 and all(0 <= c.results["test_cer"] for c in m.cells)  # a line per cell, and the total
    assert lines[-1].startswith("matrix: trained 10 of 10 cells in ")
    transfer = next(c for c in m.cells if c.kind == "transfer" and c.init == "bn")
    assert transfer.results["copied_rows"] >= 3  # blank, unknown and the word delimiter at least
    assert transfer.train_utterances == 4 and next(c for c in m.cells if c.kind == "source").train_utterances == 10
    table = m.table().splitlines()
    assert table[0] == f"| target \\ start | bn | hi | {SCRATCH} | {CEILING} |"
    assert table[2].startswith("| as | ") and table[3].split(" | ")[2] == "—"  # hi's own transfer is not run
    assert (tmp_path / "m" / "matrix.png").stat().st_size > 1000
    assert "Test WER" in (tmp_path / "m" / "matrix.md").read_text() and m.table() in (tmp_path / "m" / "matrix.md").read_text()
    pooled = next(c for c in m.cells if c.kind == "pooled")
    assert pooled.results["vocabulary_size"] > max(c.results["vocabulary_size"] for c in m.cells if c.kind == "source")
    again = TransferMatrix.load(tmp_path / "m")
    assert again.table() == m.table() and again.settings == s

    # small-budget runs choose their checkpoint on target_validation utterances, the large-budget ones on all
    validation = len(tiny_corpus("as")["validation"])
    runs = tmp_path / "m" / "runs"
    for run, size in ((runs / "transfer" / "bn-to-as" / "seed0", 2), (runs / "scratch" / "as" / "seed0", 2),
                      (runs / "ceiling" / "as" / "seed0", validation)):
        assert json.loads((run / "metrics.json").read_text())["eval_samples"] == size, run
    assert validation > 2

    # a rerun reads every finished cell and trains nothing
    monkeypatch.setattr(matrix_module, "_run_cell", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    assert run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, log=None).table() == m.table()
    # the folder refuses other run settings, naming them, before any work; fewer cells are fine
    with pytest.raises(ValueError, match=r"other settings \(target_epochs: 2 there, 3 now; patience: 6 there, 5 now\)"):
        run_transfer_matrix(settings(s.model, target_validation=2, target_epochs=3, patience=5), tmp_path / "m",
                            corpus=tiny_corpus, log=None)
    fewer = settings(s.model, target_validation=2, targets=("as",), ceiling=False)
    assert len(run_transfer_matrix(fewer, tmp_path / "m", corpus=tiny_corpus, log=None).cells) == 6

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


def test_ranker_metrics_equal_scipy_on_the_same_arrays_and_tied_picks_share_the_regret():
    from scipy.stats import kendalltau, spearmanr

    sources = ("bn", "hi", "de", "tr", "ru")
    s = MatrixSettings(sources=sources, targets=("as", "mr", "ne"), seeds=(0,), source_utterances=10, target_utterances=4)
    rng = np.random.default_rng(3)
    cer = {(t, src): float(rng.uniform(0.2, 0.8)) for t in s.targets for src in sources}
    cells = [Cell("scratch", t, "random", 0, 4, {"test_cer": 0.9}) for t in s.targets]
    cells += [Cell("transfer", t, src, 0, 4, {"test_cer": v}) for (t, src), v in cer.items()]
    m = TransferMatrix(s, cells)
    scores = {t: {src: float(rng.normal()) for src in sources} for t in s.targets}
    check = m.check_ranker(scores, bootstrap=0)
    for t in s.targets:
        x = [scores[t][src] for src in sources]
        y = [0.9 - cer[(t, src)] for src in sources]
        assert check["per_target"][t]["kendall_tau"] == pytest.approx(kendalltau(x, y).statistic, abs=1e-4)
        assert check["per_target"][t]["spearman_rho"] == pytest.approx(spearmanr(x, y).statistic, abs=1e-4)
    taus = [kendalltau([scores[t][src] for src in sources], [-cer[(t, src)] for src in sources]).statistic
            for t in s.targets]
    assert check["pooled"]["kendall_tau"]["mean"] == pytest.approx(np.mean(taus), abs=1e-4)
    # a tie at the top: the regret is the mean over the tied picks, whatever their listing order
    tied = {t: {src: (1.0 if src in ("bn", "hi") else 0.0) for src in sources} for t in s.targets}
    best = {t: max(0.9 - cer[(t, src)] for src in sources) for t in s.targets}
    for t in s.targets:
        expected = best[t] - np.mean([0.9 - cer[(t, "bn")], 0.9 - cer[(t, "hi")]])
        assert m.check_ranker(tied, bootstrap=0)["per_target"][t]["regret"] == pytest.approx(expected, abs=1e-4)


def test_pretraining_helps_says_for_each_target_whether_any_and_every_source_beat_random_init():
    s = MatrixSettings(sources=("bn", "hi"), targets=("as", "mr"), seeds=(0, 1), source_utterances=10, target_utterances=4)
    cer = {("as", "bn"): (0.3, 0.4), ("as", "hi"): (0.5, 0.6), ("mr", "bn"): (0.95, 0.97), ("mr", "hi"): (0.5, 0.5)}
    cells = [Cell("scratch", t, "random", k, 4, {"test_cer": 0.9}) for t in ("as", "mr") for k in (0, 1)]
    cells += [Cell("transfer", t, src, k, 4, {"test_cer": v[k]}) for (t, src), v in cer.items() for k in (0, 1)]
    helps = TransferMatrix(s, cells).pretraining_helps()
    assert helps == {"as": {"any": True, "every": True, "worse_than_random_init": []},
                     "mr": {"any": True, "every": False, "worse_than_random_init": ["bn"]}}


def fake_results(cell, *_, **__):
    return {"test_cer": 0.5, "test_wer": 0.9, "train_seconds": 0.0}


def test_a_folder_resumed_with_other_sources_trains_a_pooled_model_of_its_own(tmp_path, monkeypatch):
    # reproduced on main: every pooled run was the cell "all-sources", so a folder resumed with more sources read
    # the pooled model of the old ones, and the pooled-model ranker scored with it
    ran = []
    monkeypatch.setattr(matrix_module, "_run_cell", lambda cell, *a, **k: ran.append((cell.kind, cell.language))
                        or fake_results(cell))
    two = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0,), source_utterances=10,
                         target_utterances=4, ceiling=False)
    assert work_cells(two, tmp_path / "m", corpus=None, log=None) == 6
    three = MatrixSettings(sources=("bn", "hi", "tr"), targets=("as",), seeds=(0,), source_utterances=10,
                           target_utterances=4, ceiling=False)
    ran.clear()
    assert work_cells(three, tmp_path / "m", corpus=None, log=None) == 3
    assert ran == [("source", "tr"), ("pooled", "all-sources-bn-hi-tr"), ("transfer", "as")]
    assert pooled_model_path(tmp_path / "m", three) == tmp_path / "m" / "sources" / "all-sources-bn-hi-tr" / "seed0" / "model"
    assert pooled_model_path(tmp_path / "m", two) != pooled_model_path(tmp_path / "m", three)


def test_cells_held_by_a_live_process_are_left_to_it_and_a_dead_holders_claim_is_taken_over(tmp_path, monkeypatch):
    import subprocess
    import sys

    from mtransfer.atomic import atomic_write_json
    from mtransfer.locks import LOCK_FILE

    s = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0,), source_utterances=10, target_utterances=4,
                       ceiling=False, pooled=False)
    out = tmp_path / "m"
    held = Cell("source", "bn", "random", 0, 10)
    dead = Cell("scratch", "as", "random", 0, 4)

    def claim(cell, pid):
        folder = out / "claims" / cell.path.removesuffix(".json")
        folder.mkdir(parents=True)
        (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": __import__("socket").gethostname()}))

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim(held, os.getpid())  # another live process trains bn
    claim(dead, int(gone.stdout))  # a process that died while training the random-init run
    ran = []

    def run(cell, *a, **k):
        ran.append((cell.kind, cell.init, cell.language))
        if cell.kind == "transfer" and cell.init == "hi":  # the other process finishes bn meanwhile
            held.results = fake_results(held)
            atomic_write_json(out / held.path, __import__("dataclasses").asdict(held))
        return fake_results(cell)

    monkeypatch.setattr(matrix_module, "_run_cell", run)
    assert work_cells(s, out, corpus=None, log=None, poll=0.01) == 4
    # bn was never trained here; its transfer cell waited for it; the dead holder's cell was taken over
    assert ran == [("source", "random", "hi"), ("scratch", "random", "as"), ("transfer", "hi", "as"),
                   ("transfer", "bn", "as")]
    assert list((out / "claims").rglob(LOCK_FILE)) == [out / "claims" / held.path.removesuffix(".json") / LOCK_FILE]


def test_worker_processes_need_a_picklable_corpus(tmp_path):
    s = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0,), source_utterances=10, target_utterances=4)
    with pytest.raises(ValueError, match="the corpus must be picklable \\(e.g. a CorpusFolder\\); function is not"):
        run_transfer_matrix(s, tmp_path / "m", corpus=lambda language: {}, workers=2)
    with pytest.raises(ValueError, match="workers=0: expected an integer >= 1"):
        run_transfer_matrix(s, tmp_path / "m", corpus=lambda language: {}, workers=0)


@pytest.mark.slow
def test_two_workers_train_every_cell_once_and_a_rerun_trains_nothing(tiny_corpus, tiny_speech, tmp_path, capfd):
    s = settings(tiny_speech("wav2vec2"), targets=("as",), seeds=(0, 1), ceiling=False)
    m = run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, workers=2)
    printed = [line for line in capfd.readouterr().out.splitlines() if line.startswith("[worker ")]
    trained = [" ".join(line.split("] ", 1)[1].split(":")[0].split()) for line in printed]  # e.g. "source bn seed 0"
    # 2 seeds x (2 sources + scratch + 2 transfers) + 1 pooled run, each trained by exactly one worker
    assert len(printed) == 11 and len(set(trained)) == 11
    assert {line[:10] for line in printed} == {"[worker 0]", "[worker 1]"}  # both worked
    assert len(m.cells) == 11 and all("test_cer" in c.results for c in m.cells)
    assert sorted(p.name for p in (tmp_path / "m" / "sources").glob("*/seed*")) == ["seed0"] * 3 + ["seed1"] * 2
    assert not list((tmp_path / "m" / "claims").rglob(".mtransfer.lock"))  # every claim released
    again = run_transfer_matrix(s, tmp_path / "m", corpus=tiny_corpus, workers=2)
    assert not [line for line in capfd.readouterr().out.splitlines() if line.startswith("[worker ")]
    assert again.table() == m.table()


@pytest.mark.parametrize("change, message", [
    (dict(seeds=()), "MatrixSettings.seeds is empty"),
    (dict(sources=("bn", "bn")), "each once"),
    (dict(units="words"), "expected 'characters' or 'phones'"),
    (dict(target_utterances=200), "the small budget \\(200 utterances\\) must be below the large one \\(200\\)"),
    (dict(source_epochs=0), "MatrixSettings.source_epochs=0: expected an integer >= 1"),
    (dict(units="phones"), "with units='phones' set pooled=False"),
])
def test_settings_are_checked(change, message):
    with pytest.raises(ValueError, match=message):
        MatrixSettings(**change)


def test_the_cell_files_name_kind_start_target_and_seed():
    assert Cell("transfer", "as", "bn", 1, 30).path == "cells/transfer/bn-to-as/seed1.json"
    assert Cell("scratch", "as", "random", 0, 30).path == "cells/scratch/as/seed0.json"
    assert json.loads(json.dumps(MatrixSettings().__dict__, default=list))["targets"] == ["as", "mr", "ne", "it", "pt"]


def write_split(rows, path):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["audio", "transcript"])
        w.writeheader()
        w.writerows({"audio": r["audio"], "transcript": r["transcript"]} for r in rows)
    return str(path)


@pytest.mark.slow
def test_one_command_ranks_trains_on_the_best_source_adapts_reports_and_resumes(tiny_corpus, tiny_speech, tmp_path,
                                                                               capsys, monkeypatch):
    import mtransfer as mt
    from mtransfer.cli import main

    files = {lang: ",".join(write_split(tiny_corpus(lang)[s], tmp_path / f"{lang}_{s}.csv")
                            for s in ("train", "validation", "test")) for lang in ("bn", "hi", "as")}
    out = tmp_path / "adapt"
    args = ["adapt-speech", "--source", f"bn={files['bn']}", "--source", f"hi={files['hi']}", "--target", files["as"],
            "--target-utterances", "5", "--model", str(tiny_speech("wav2vec2")), "--source-epochs", "1",
            "--target-epochs", "1", "--scratch-epochs", "1", "--batch-size", "4", "--output-dir", str(out),
            "--no-progress"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "adapt.json").read_text())
    assert printed["source"] == report["source"] == report["ranking"][0]["source"]
    assert printed["random_init"]["test_cer"] == report["baseline_results"]["test_cer"]
    assert {r["source"] for r in report["ranking"]} == {"bn", "hi"} and report["scorer"] == "mfcc"
    assert sorted(p.name for p in out.iterdir()) == ["adapt.json", "baseline", "baseline.json", "ranking.json",
                                                     "report.md", "source", "source.json", "target", "target.json"]
    assert report["source_results"]["utterances"] == len(tiny_corpus(report["source"])["train"])  # one source trained
    assert report["target_results"]["train_utterances"] == 5 and report["target_results"]["scored_on"] == "test"
    assert report["target_results"]["copied_rows"] >= 3
    assert report["cer_reduction"] == pytest.approx(report["baseline_results"]["test_cer"] - report["target_results"]["test_cer"], abs=1e-4)
    text = (out / "report.md").read_text()
    assert f"Chosen: **{report['source']}**: {report['source']} has the highest average posterior" in text
    assert "| random init |" in text and (out / "target" / "model" / "README.md").is_file()
    adapted = mt.TransferModel.from_pretrained(report["model_dir"])
    assert adapted.task == "ctc" and isinstance(adapted.transcribe(tiny_corpus("as")["test"][0]["audio"]), str)

    # interrupted after the source stage: a rerun trains the target and the baseline only
    for name in ("target.json", "baseline.json", "adapt.json"):
        (out / name).unlink()
    runs = []
    from mtransfer.experiments import source_choice

    real = source_choice.train_ctc_run
    monkeypatch.setattr(source_choice, "train_ctc_run", lambda *a, **k: (runs.append(Path(a[4]).name), real(*a, **k))[1])
    assert main(args) == 0 and runs == ["target", "baseline"]
    assert main(args) == 0 and runs == ["target", "baseline"]  # all done: nothing trains
    capsys.readouterr()
    assert main([*args, "--top-k", "2"]) == 2
    assert "ranking.json was made by another run (top_k 1 -> 2); its result does not hold" in capsys.readouterr().err
    # on the earlier main each of these exited 0 in seconds and printed the first run's results
    target_flag = args.index("--target") + 1
    other_target = [*args[:target_flag], files["hi"], *args[target_flag + 1:]]
    other_epochs = [*args, "--target-epochs", "2"]
    fewer_rows = tmp_path / "bn_train_short.csv"
    lines = Path(files["bn"].split(",")[0]).read_text().splitlines()
    fewer_rows.write_text("\n".join(lines[:-1]) + "\n")  # one source row deleted
    bn_short = ",".join([str(fewer_rows), *files["bn"].split(",")[1:]])
    other_source = [a.replace(f"bn={files['bn']}", f"bn={bn_short}") for a in args]
    for argv, why in ((other_target, "target corpus changed"), (other_epochs, "target_epochs 1 -> 2"),
                      (other_source, "source_data 'bn' changed")):
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "was made by another run" in err and len(err.splitlines()) == 1, err
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing rewritten

    assert main(["adapt-speech", "--source", f"bn={files['bn']}", "--target", files["as"], "--output-dir",
                 str(tmp_path / "x")]) == 2
    assert "give at least two candidate sources" in capsys.readouterr().err
    assert main(["adapt-speech", "--source", "bn=a.csv", "--source", "hi=b.csv", "--target", files["as"],
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "expected builtin:espeak-asr-LANG, TRAIN,VALIDATION[,TEST] files or audio:PATH" in capsys.readouterr().err


def test_bad_sources_and_targets_stop_before_any_training(tiny_corpus, tiny_speech, tmp_path, monkeypatch):
    from mtransfer.experiments import source_choice
    from mtransfer.experiments.source_choice import adapt_from_best_source

    monkeypatch.setattr(source_choice, "train_ctc_run", lambda *a, **k: pytest.fail("trained before the input was checked"))
    split = lambda lang: {s: [{"audio": r["audio"], "transcript": r["transcript"]} for r in rows]  # noqa: E731
                          for s, rows in tiny_corpus(lang).items()}
    bn, hi, target = split("bn"), split("hi"), split("as")
    model = str(tiny_speech("wav2vec2"))
    with pytest.raises(ValueError, match="needs at least two candidate sources"):
        adapt_from_best_source({"bn": bn}, target, tmp_path / "a", model=model)
    with pytest.raises(ValueError, match="source 'hi' has audio but no transcripts: give its transcripts, or pass "
                                         "unlabelled='pretrain'"):
        adapt_from_best_source({"bn": bn, "hi": {"audio": [r["audio"] for r in hi["train"]]}}, target, tmp_path / "a",
                               model=model)
    with pytest.raises(ValueError, match="trains wav2vec2 encoders .* this model is a 'wav2vec2-bert'"):
        adapt_from_best_source({"bn": bn, "hi": {"audio": [r["audio"] for r in hi["train"]]}}, target, tmp_path / "a",
                               model=str(tiny_speech("w2v-bert")), unlabelled="pretrain")
    with pytest.raises(ValueError, match="target: audio without transcripts"):
        adapt_from_best_source({"bn": bn, "hi": hi}, {"audio": [r["audio"] for r in target["train"]]}, tmp_path / "a",
                               model=model)
    with pytest.raises(ValueError, match="target: the train split has no utterances \\(no audio\\)"):
        adapt_from_best_source({"bn": bn, "hi": hi}, {**target, "train": []}, tmp_path / "a", model=model)
    with pytest.raises(ValueError, match="source 'hi': no audio"):
        adapt_from_best_source({"bn": bn, "hi": {"audio": []}}, target, tmp_path / "a", model=model,
                               unlabelled="pretrain")
    with pytest.raises(ValueError, match="top_k=3: expected 1 to 2"):
        adapt_from_best_source({"bn": bn, "hi": hi}, target, tmp_path / "a", model=model, top_k=3)
    assert not (tmp_path / "a").exists()  # nothing written


@pytest.mark.slow
def test_untranscribed_audio_at_other_rates_is_resampled_pretrained_on_and_adapted(tiny_corpus, tiny_speech, tmp_path):
    import torchaudio.functional as AF

    from mtransfer.media import load_audio
    from mtransfer.experiments.source_choice import adapt_from_best_source

    split = lambda lang: {s: [{"audio": r["audio"], "transcript": r["transcript"]} for r in rows]  # noqa: E731
                          for s, rows in tiny_corpus(lang).items()}
    # hi's audio as 8 kHz arrays and bn's at 22.05 kHz: other rates than the model's 16 kHz, resampled on reading
    hi = {"audio": [(AF.resample(load_audio(r["audio"], 16000), 16000, 8000).numpy(), 8000) for r in tiny_corpus("hi")["train"]]}
    bn = {s: [{"audio": (AF.resample(load_audio(r["audio"], 16000), 16000, 22050).numpy(), 22050),
               "transcript": r["transcript"]} for r in rows] for s, rows in split("bn").items()}
    report = adapt_from_best_source({"bn": bn, "hi": hi}, split("as"), tmp_path / "u", model=str(tiny_speech("wav2vec2")),
                                    top_k=2, unlabelled="pretrain", pretrain_epochs=1, target_epochs=1, baseline=False,
                                    target_utterances=5, batch_size=4, log=None)
    assert report["chosen"] in (["bn", "hi"], ["hi", "bn"]) and report["baseline_results"] is None
    assert report["source_results"]["kind"] == "continued pretraining"
    assert report["source_results"]["utterances"] == len(hi["audio"]) + len(bn["train"])
    assert 0 <= report["target_results"]["test_cer"] and report["target_results"]["copied_rows"] == 0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_script_under_accelerate_launch_splits_cells_across_processes_and_writes_every_output(tiny_speech, tmp_path):
    from tests.test_multiprocess import launch_report, launch_two_cpu

    out = tmp_path / "matrix"
    proc = launch_two_cpu("scripts/transfer_matrix.py", "--sources", "bn", "hi", "--targets", "as", "--seeds", "0",
                          "--per-language", "24", "--source-utterances", "10", "--target-utterances", "4",
                          "--source-epochs", "1", "--target-epochs", "1", "--scratch-epochs", "1", "--batch-size", "4",
                          "--model", tiny_speech("wav2vec2"), "--output-dir", out,
                          env={"MTRANSFER_CACHE": str(tmp_path / "cache" / "features")}, timeout=900)
    assert proc.returncode == 0, launch_report(proc)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[process ")]
    # 2 sources, the pooled model, random init, ceiling and 2 transfers: each trained once, by one process or the other
    assert len(lines) == 7 and len({line.split("] ", 1)[1].split(":")[0] for line in lines}) == 7
    m = TransferMatrix.load(out)
    assert len(m.cells) == 7 and all("test_cer" in c.results for c in m.cells)
    for name in ("matrix.md", "matrix.png", "rankers.md", "rankers.json", "lid_vs_reduction.png", "timings.json",
                 "lid_mfcc.json", "lid_mfcc-frames.png", "lid_fbank.json", "lid_pooled-model.json"):
        assert (out / name).is_file(), name
    rankers = (out / "rankers.md").read_text()
    assert all(f"| {r} |" in rankers for r in ("mfcc", "mfcc-frames", "fbank", "pooled-model", "head-probe", "zero-shot",
                                                "quality", "mfcc+head-probe", "uriel", "random"))
    timings = json.loads((out / "timings.json").read_text())
    assert all(timings["timings_s"][f"ranker_{r}_s"] >= 0 for r in ("head-probe", "zero-shot", "quality", "mfcc"))
    assert timings["runs"] == 7 and timings["workers"] == 2 and set(timings["pretraining_helps"]) == {"as"}


def test_the_lectures_own_tables_through_the_ranker_check():
    """The lecture notes' WER table (pretrain on 60 h, adapt with 10 h; the diagonal is the 10 h -> 10 h baseline)
    and its frame-level LID posteriors: the check the README quotes beside ours."""
    langs = ["Bengali", "Assamese", "Lao", "Turkish"]
    wer = {"Bengali": [66.0, 63.8, 65.1, 64.2], "Assamese": [61.2, 65.2, 62.9, 62.1], "Lao": [59.8, 60.1, 62.3, 60.0],
           "Turkish": [61.8, 63.1, 63.3, 63.9]}
    lid = {"Bengali": [0.57, 0.21, 0.09, 0.13], "Assamese": [0.21, 0.57, 0.11, 0.11], "Lao": [0.08, 0.11, 0.71, 0.10],
           "Turkish": [0.13, 0.12, 0.10, 0.65]}
    s = MatrixSettings(sources=langs, targets=langs, seeds=(0,), source_utterances=10, target_utterances=4,
                       ceiling=False, pooled=False)
    cells = [Cell("scratch" if src == t else "transfer", t, "random" if src == t else src, 0, 4,
                  {"test_cer": wer[t][j] / 100}) for t in langs for j, src in enumerate(langs)]
    m = TransferMatrix(s, cells)
    check = m.check_ranker({t: {src: lid[t][j] for j, src in enumerate(langs) if src != t} for t in langs})
    assert [check["per_target"][t]["top1_hit"] for t in langs] == [True, True, False, True]  # "most of the time"
    assert check["per_target"]["Lao"]["kendall_tau"] == -1.0  # Bengali helps Lao most, and the LID ranks it last
    assert check["pooled"]["kendall_tau"]["mean"] == pytest.approx(0.4541, abs=1e-4)
    assert check["pooled"]["regret"]["mean"] == pytest.approx(0.0008, abs=1e-4)
    assert all(v["every"] for v in m.pretraining_helps().values())  # "transfer learning always improves performance"


@pytest.mark.parametrize("second_ci, second_score, says", [
    ([0.30, 0.50], 0.46, "hi is next (0.460), inside that interval: the choice is not clear-cut."),
    ([0.271, 0.467], 0.217, "hi is next (0.217), below that interval, though the two intervals overlap (0.271-0.467): "
                            "the choice is not clear-cut."),
    ([0.10, 0.30], 0.20, "hi is next (0.200), below that interval, and the two intervals do not overlap (0.100-0.300): "
                         "the choice is clear-cut."),
])
def test_the_report_says_where_the_next_source_stands_as_the_code_decides(second_ci, second_score, says, tmp_path):
    """On the earlier main, 0.217 outside 0.271-0.467 was reported "within the interval" (only the intervals overlapped)."""
    from mtransfer.experiments.source_choice import _report

    ranking = {"ranking": [{"source": "bn", "score": 0.55, "ci": [0.45, 0.65]},
                           {"source": "hi", "score": second_score, "ci": second_ci}], "scorer": "mfcc", "lid_accuracy": 0.9}
    run = {"test_cer": 0.5, "test_wer": 0.9, "best_epoch": 3, "model_dir": str(tmp_path / "m")}
    _report(tmp_path, ranking, ["bn"], {}, run, None, 30, True, lambda line: None)
    assert says in (tmp_path / "report.md").read_text()


def test_adapt_speech_checks_its_thread_count_before_any_work(tmp_path):
    from mtransfer.experiments.source_choice import adapt_from_best_source

    with pytest.raises(ValueError, match="num_threads=0: expected an integer >= 1"):
        adapt_from_best_source({"a": "builtin:espeak-asr-hi", "b": "builtin:espeak-asr-bn"}, "builtin:espeak-asr-mr",
                               tmp_path / "x", num_threads=0)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cells_run_one_by_one_from_two_concurrent_loops_reproduce_the_matrix_byte_for_byte(tiny_speech, tmp_path):
    """What a Slurm job array (or a Ray / Kubernetes task per cell) does: ``--list-cells``, then ``--cell I`` for every
    index from two shell loops running at once, then one call without ``--cell`` for the tables. They equal the
    tables of one call with two workers, byte for byte."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = [sys.executable, str(root / "scripts" / "transfer_matrix.py"), "--sources", "bn", "hi", "--targets", "as",
              "--seeds", "0", "--per-language", "24", "--source-utterances", "10", "--target-utterances", "4",
              "--source-epochs", "1", "--target-epochs", "2", "--scratch-epochs", "2", "--batch-size", "4",
              "--model", str(tiny_speech("wav2vec2")), "--num-threads", "1"]
    env = {**os.environ, "MTRANSFER_CACHE": str(tmp_path / "cache" / "features"), "OMP_NUM_THREADS": "1"}

    def run(*args, check=True):
        proc = subprocess.run([*script, *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
        assert not check or proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    listed = [line.split("\t") for line in run("--list-cells").stdout.splitlines()]
    assert [row[0] for row in listed] == [str(i) for i in range(7)]
    assert listed[5][1:] == ["transfer/bn-to-as/seed0", "source/bn/seed0"] and listed[0][2] == "-"
    names = [row[1] for row in listed]
    assert all(names.index(need) < i for i, (_, _, need) in enumerate(listed) if need != "-")  # sources first

    # a transfer cell refuses to start without its source model, naming it, and trains nothing
    refused = run("--cell", "transfer/hi-to-as/seed0", "--output-dir", tmp_path / "loops", check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        f"transfer_matrix.py: error: cell transfer/hi-to-as/seed0 starts from the model of cell source/hi/seed0, which "
        f"is not trained yet in {tmp_path / 'loops'}; run that cell first (it comes earlier in --list-cells) or give "
        "--wait SECONDS.")
    assert not (tmp_path / "loops" / "cells").exists()

    loops = [subprocess.Popen(["bash", "-c", f'for i in {" ".join(map(str, part))}; do "$@" --cell $i || exit 1; done',
                               "loop", *script, "--wait", "600", "--output-dir", str(tmp_path / "loops")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for part in (range(0, 7, 2), range(1, 7, 2))]
    reference = run("--workers", "2", "--output-dir", tmp_path / "one")  # meanwhile: one call, two workers
    outputs = [loop.communicate(timeout=900) for loop in loops]
    assert [loop.returncode for loop in loops] == [0, 0], outputs
    trained = [line for out, _ in outputs for line in out.splitlines() if "test CER" in line]
    assert len(trained) == 7  # every cell once, by one loop or the other
    final = run("--workers", "2", "--output-dir", tmp_path / "loops")
    assert "matrix: trained" not in final.stdout  # the tables come from the finished cells
    for name in ("matrix.md", "rankers.md"):
        assert (tmp_path / "loops" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert "matrix: trained 7 of 7 cells" in reference.stdout
    # a cell asked for again is not trained again
    assert run("--cell", "5", "--output-dir", tmp_path / "loops").stdout.strip() == (
        f"transfer/bn-to-as/seed0: already trained in {tmp_path / 'loops'}")


@pytest.mark.slow
def test_adapt_speech_refuses_an_all_blank_source_naming_the_run_and_reports_flags(tiny_corpus, tiny_speech, tmp_path,
                                                                                  capsys, monkeypatch):
    """A source run that never leaves CTC's all-blank plateau (its blank's bias held far above every symbol's) stops
    adapt-speech in one line before the target trains; report.md and adapt.json of a run that goes on name the flags
    of each run, and the adapted model's card names the source model it started from."""
    import torch

    import mtransfer as mt
    from mtransfer.cli import main
    from mtransfer.experiments import source_choice

    files = {lang: ",".join(write_split(tiny_corpus(lang)[s], tmp_path / f"{lang}_{s}.csv")
                            for s in ("train", "validation", "test")) for lang in ("bn", "hi", "as")}
    args = ["adapt-speech", "--source", f"bn={files['bn']}", "--source", f"hi={files['hi']}", "--target", files["as"],
            "--target-utterances", "5", "--model", str(tiny_speech("wav2vec2")), "--source-epochs", "2",
            "--target-epochs", "2", "--scratch-epochs", "2", "--batch-size", "4", "--no-progress"]
    real_run = source_choice.train_ctc_run

    def blank_source(model, train, *a, **k):
        if Path(a[2]).name == "source":  # the source run: held on the plateau (the optimizer barely moves the bias)
            with torch.no_grad():
                model.head.out.bias[0] = 1e4
        return real_run(model, train, *a, **k)

    monkeypatch.setattr(source_choice, "train_ctc_run", blank_source)
    out = tmp_path / "blank"
    assert main([*args, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) >= 1 and err.splitlines()[-1].startswith(
        f"mtransfer adapt-speech: error: {out / 'source'}: the source run on ") and "ended all-blank" in err
    assert json.loads((out / "source.json").read_text())["results"]["flags"] == ["all_blank"]
    assert not (out / "target.json").exists() and not (out / "target").exists()

    monkeypatch.setattr(source_choice, "train_ctc_run", real_run)
    out = tmp_path / "fine"
    assert main([*args, "--output-dir", str(out)]) == 0
    report = json.loads((out / "adapt.json").read_text())
    started = report["target_results"]["started_from"]
    assert started["model"] == str((out / "source" / "model").resolve()) and started["kind"] == "CTC"
    assert started["base"] == str(tiny_speech("wav2vec2"))
    card = (out / "target" / "model" / "README.md").read_text()
    assert (f"It started from the trained mtransfer model a local model (source/model) (a ctc model, itself fine-tuned "
            f"from a local model ({Path(tiny_speech('wav2vec2')).name})): its backbone as trained, a new head; "
            f"{report['target_results']['copied_rows']} output rows") in card
    assert str(out) not in card.split("## Use")[0]  # the model it started from: never by its whole local path
    assert mt.TransferModel.from_pretrained(out / "target" / "model").started_from["model"] == started["model"]
    text = (out / "report.md").read_text()
    flagged = {name: report[key]["flags"] for name, key in (("source", "source_results"), ("adapted", "target_results"),
                                                             ("random-init", "baseline_results"))}
    for name, flags in flagged.items():  # 2 epochs of a tiny model: each run's flags, and only those, are in the report
        for sentence in source_choice.describe_flags(flags):
            assert f"- the {name} run: {sentence}" in text
    assert ("Read these figures with care:" in text) == any(flagged.values())


def test_flagged_runs_are_marked_in_the_matrix_tables_and_listed_under_them():
    s = MatrixSettings(sources=("bn", "hi"), targets=("as",), seeds=(0, 1), source_utterances=10, target_utterances=4,
                       pooled=False)
    cells = [Cell("source", "bn", "random", 0, 10, {"test_cer": 0.5, "test_wer": 0.9, "flags": ["improving_at_cap"]}),
             Cell("source", "hi", "random", 0, 10, {"test_cer": 0.5, "test_wer": 0.9, "flags": []})]
    for seed in (0, 1):
        cells += [Cell("scratch", "as", "random", seed, 4, {"test_cer": 1.0, "test_wer": 1.0,
                                                            "flags": ["all_blank"] if seed == 1 else []}),
                  Cell("ceiling", "as", "random", seed, 10, {"test_cer": 0.4, "test_wer": 0.8}),
                  Cell("transfer", "as", "bn", seed, 4, {"test_cer": 0.7, "test_wer": 0.9, "flags": []}),
                  Cell("transfer", "as", "hi", seed, 4, {"test_cer": 0.8, "test_wer": 0.9,
                                                         "flags": ["all_blank", "improving_at_cap"] if seed else []})]
    m = TransferMatrix(s, cells)
    row = m.table().splitlines()[2]
    assert row == "| as | **0.700 ± 0.000** | 0.800 ± 0.000†‡ | 1.000 ± 0.000† | 0.400 ± 0.000 |"
    notes = m.flag_notes()
    assert notes[0] == "Runs to read with care († all-blank; ‡ still improving at its epoch cap):"
    assert [n.split(":")[0] for n in notes[2:]] == ["- source/bn/seed0 ‡", "- scratch/as/seed1 †",
                                                    "- transfer/hi-to-as/seed1 †‡"]
    assert TransferMatrix(s, [Cell(c.kind, c.language, c.init, c.seed, c.train_utterances,
                                   {k: v for k, v in c.results.items() if k != "flags"}) for c in cells]).flag_notes() == []


def test_adapt_speech_runs_with_the_matrix_budgets_floors_and_plateau_rule():
    """One set of defaults: the matrix's, adapt_from_best_source's and the adapt-speech command's agree."""
    import inspect

    from mtransfer.cli import build_parser
    from mtransfer.experiments.source_choice import adapt_from_best_source

    matrix = MatrixSettings()
    defaults = {k: p.default for k, p in inspect.signature(adapt_from_best_source).parameters.items()}
    parser = build_parser()
    command = vars(parser.parse_args(["adapt-speech", "--source", "a=x", "--source", "b=y", "--target", "t",
                                      "--output-dir", "o"]))
    for name in ("source_epochs", "target_epochs", "scratch_epochs", "source_lr", "target_lr", "scratch_lr",
                 "source_patience", "patience", "scratch_patience", "min_epochs", "ctc_plateau", "batch_size", "model"):
        assert defaults[name] == getattr(matrix, name), name
        if name in command and not name.endswith("_lr"):
            assert command[name] == getattr(matrix, name), name


def test_the_rankers_table_counts_a_tie_at_the_top_apart_from_a_hit(tmp_path, capsys):
    """A ranker whose first place is shared by several sources made no pick: it used to count as a hit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("matrix_script", Path(__file__).resolve().parents[1] / "scripts" / "transfer_matrix.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pooled = {"kendall_tau": {"mean": 0.4, "ci": [0.2, 0.6]}, "spearman_rho": {"mean": 0.5, "ci": [0.3, 0.7]},
              "regret": {"mean": 0.01, "ci": [0.0, 0.02]}}
    checks = {"combined": {"pooled": pooled, "per_target": {"as": {"top1_hit": True}, "pt": {"top1_hit": "tie"},
                                                            "it": {"top1_hit": False}}}}
    script.write_rankers(checks, tmp_path)
    row = (tmp_path / "rankers.md").read_text().splitlines()[2]
    assert row == "| combined | 0.40 [0.20, 0.60] | 0.50 [0.30, 0.70] | 1/3 (+1 tied) | 0.01 [0.00, 0.02] | — |"
