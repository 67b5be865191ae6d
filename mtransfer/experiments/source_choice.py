"""The procedure the transfer matrix checks, as one call: rank the sources, pretrain on the best, adapt.

1. A language-ID scorer (:func:`mtransfer.ranking.rank_sources`) ranks the candidate source
   corpora by their average posterior on the target's training audio;
2. a CTC model is trained from scratch on the top-ranked source (or the top ``k`` pooled; its
   training split, checkpoint chosen on its validation split), or, for a source with audio but
   no transcripts, a wav2vec2 encoder continues its self-supervised pretraining on that audio;
3. its encoder, with a new head for the target's units (shared rows copied), is fine-tuned on the
   target's small training set and scored on the target's test split when there is one;
4. with ``baseline=True`` the same target data also trains a model from random initialisation
   (longer patience), so the report says what the source was worth.

Every stage writes its result before the next starts (``ranking.json``, ``source/``,
``target/``, ``baseline/``), so a rerun after an interruption redoes only the unfinished stages;
the report (``adapt.json``, ``report.md``) and the adapted model's card close the run.

Corpora are given as ``builtin:espeak-asr-LANG`` names (their splits), as a mapping
``{"train": ..., "validation": ..., "test": ...}`` of anything :func:`mtransfer.load_labeled`
reads with ``audio`` / ``transcript`` columns, or, for an untranscribed source, as
``{"audio": [...]}`` (files, arrays or ``(wave, rate)`` pairs, at any sampling rate).

>>> adapt_from_best_source({"hi": "builtin:espeak-asr-hi", "bn": "builtin:espeak-asr-bn"},
...                        "builtin:espeak-asr-mr", "outputs/adapt-mr")  # doctest: +SKIP
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mtransfer.atomic import atomic_write_bytes, atomic_write_json, read_json
from mtransfer.builtins import DATA
from mtransfer.cache import text_fingerprint
from mtransfer.card import write_model_card
from mtransfer.data import load_labeled
from mtransfer.experiments.transfer_matrix import train_ctc_run
from mtransfer.record import describe_flags
from mtransfer.media import media_fingerprint
from mtransfer.model import TransferModel
from mtransfer.ranking import rank_sources
from mtransfer.ranking.lid import resolve_inputs
from mtransfer.speech.pretrain import PretrainArguments, continue_pretraining, load_for_pretraining
from mtransfer.tasks import get_task
from mtransfer.training import DEFAULT_CTC_PLATEAU

SPLITS = ("train", "validation", "test")


def ctc_splits(corpus: Any, where: str, vocabulary: Any = None, train_utterances: int | None = None,
               seed: int = 0) -> dict[str, Any]:
    """A corpus's splits as CTC datasets sharing the training split's vocabulary.

    ``train_utterances`` keeps that many training utterances (drawn with ``seed``): the small budget.
    """
    if isinstance(corpus, str):
        if not corpus.startswith("builtin:"):
            raise ValueError(f"{where} {corpus!r}: give a builtin:espeak-asr-LANG name or a mapping of splits "
                             "({'train': ..., 'validation': ...}).")

        if corpus not in DATA or not get_task(DATA[corpus].task).transcribes:
            raise ValueError(f"{where} {corpus!r}: not a transcribed builtin corpus; expected one of "
                             f"{', '.join(k for k, v in DATA.items() if v.task == 'ctc')}.")
        corpus = DATA[corpus].splits()
        corpus = {s: [{"audio": r["audio"], "transcript": r["transcript"]} for r in rows] for s, rows in corpus.items()}
    missing = [s for s in ("train", "validation") if s not in corpus]
    if missing:
        raise ValueError(f"{where}: no {' or '.join(missing)} split; it has {', '.join(corpus)}.")
    def read(data: Any, vocab: Any, split: str) -> Any:
        if isinstance(data, (list, tuple)) and not data:
            raise ValueError(f"{where}: the {split} split has no utterances (no audio).")
        try:
            out = load_labeled(data, input_column="audio", label_column="transcript", task="ctc", vocabulary=vocab)
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"{where}, {split} split: {e}") from None
        if not len(out):
            raise ValueError(f"{where}: the {split} split has no utterances (no audio).")
        return out

    train = corpus["train"]
    if train_utterances is not None:
        full = read(train, vocabulary, "train")
        if len(full) < train_utterances:
            raise ValueError(f"{where}: {len(full)} training utterances, fewer than the {train_utterances} asked for.")
        keep = sorted(random.Random(seed).sample(range(len(full)), train_utterances))
        train = [{"audio": full.inputs[i], "transcript": full.references[i]} for i in keep]
    out = {"train": read(train, vocabulary, "train")}
    for split in ("validation", "test"):
        if split in corpus:
            out[split] = read(corpus[split], out["train"].vocabulary, split)
    return out


def _unlabelled(corpus: Any) -> bool:
    return isinstance(corpus, Mapping) and set(corpus) == {"audio"}


def _audio_only(corpus: Mapping[str, Any], where: str) -> list[Any]:
    audio = resolve_inputs(corpus["audio"]) if len(corpus["audio"]) else []
    if not audio:
        raise ValueError(f"{where}: no audio (expected files, arrays or (wave, rate) pairs).")
    return audio


def corpus_fingerprint(corpus: Any) -> str:
    """A digest of a corpus's content: each split's audio (files by path, size and time; arrays by bytes) and transcripts."""
    import hashlib


    h = hashlib.sha256()
    if isinstance(corpus, list):  # untranscribed audio
        h.update(media_fingerprint(corpus).encode())
        return h.hexdigest()[:16]
    for split in SPLITS:
        if split in corpus:
            h.update(f"{split}|{media_fingerprint(corpus[split].inputs)}|{text_fingerprint(corpus[split].references)}".encode())
    return h.hexdigest()[:16]


def _differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted({*saved, *wanted}):
        a, b = saved.get(key), wanted.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):  # corpus fingerprints by name
            out += [f"{key} {name!r} changed" if name in a and name in b else
                    f"{key} {name!r} {'added' if name in b else 'removed'}"
                    for name in sorted({*a, *b}) if a.get(name) != b.get(name)]
        elif key.endswith("_data"):
            out.append(f"{key[:-len('_data')]} corpus changed")
        else:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


def _stage(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """A finished stage's record, or None; a record written by anything else (settings, corpora, target) is an error."""
    if not path.is_file():
        return None
    record = read_json(path, "finished stage's record")
    saved = record.get("settings") if isinstance(record, dict) else None
    if saved != settings:
        changed = _differences(saved if isinstance(saved, dict) else {}, settings)
        raise ValueError(f"{path} was made by another run ({'; '.join(changed[:6])}); its result does not hold for this "
                         "one. Rerun with that run's settings and corpora, choose another output_dir, or delete the "
                         "folder to start again.")
    return record


def adapt_from_best_source(sources: Mapping[str, Any], target: Any, output_dir: str | Path, *, scorer: str = "mfcc",
                           top_k: int = 1, model: str = "builtin:w2v-bert-mini", target_utterances: int | None = None,
                           unlabelled: str = "error", baseline: bool = True, source_epochs: int = 15,
                           target_epochs: int = 30, scratch_epochs: int = 120, pretrain_epochs: int = 10,
                           source_lr: float = 3e-3, target_lr: float = 1e-3, scratch_lr: float = 2e-3,
                           source_patience: int = 4, patience: int = 6, scratch_patience: int = 20,
                           min_epochs: int = 12, ctc_plateau: float | None = DEFAULT_CTC_PLATEAU,
                           batch_size: int = 8, seed: int = 0, progress: bool = False, num_threads: int | None = None,
                           log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Rank ``sources`` for ``target``, pretrain on the best (or the top ``k`` pooled), adapt, report.

    Args:
        sources: Name -> corpus (at least two). target: The target corpus (transcribed).
        output_dir: Gets ``ranking.json``, ``source/`` (the source run), ``target/`` (the adapted
            model in ``target/model``, with its card), ``baseline/`` (random init on the same
            target data), ``adapt.json`` and ``report.md``. A rerun skips finished stages.
        scorer: The :func:`~mtransfer.ranking.rank_sources` backbone (``mfcc``, ``mfcc-frames``, ``fbank``, a model).
        top_k: Pool the training data of the ``k`` best-ranked sources (1: the best alone).
        model: The encoder the source model starts from (the defaults suit ``builtin:w2v-bert-mini``).
        target_utterances: Keep this many target training utterances (None: all).
        unlabelled: What to do with a chosen source that has audio but no transcripts: ``"error"``
            (stop before any training), or ``"pretrain"`` (continued wav2vec2 pretraining of
            ``model`` on its audio for ``pretrain_epochs``; ``model`` must be a wav2vec2 encoder).
        baseline: Also train the target from random initialisation (``scratch_*`` settings).
        *_epochs, *_lr, *_patience, min_epochs, ctc_plateau: The budgets, rates, patience, floor and
            all-blank plateau rule of the source, target and random-init runs: the transfer matrix's
            (:class:`~mtransfer.experiments.transfer_matrix.MatrixSettings`), so a report's gain is
            measured as the matrix measures it. The random-init run gets its own rate and a long
            patience: it leaves CTC's all-blank plateau later than a transferred model.
        num_threads: Torch threads for every stage (default: torch's, one per core); on a machine other
            jobs share, the cores you may use.

    Raises:
        ValueError: Fewer than two sources, a bad ``top_k``, a target with no audio or no transcripts,
            an untranscribed source without ``unlabelled="pretrain"``, or an ``output_dir`` written
            with other settings: each before any training. A source run that ended all-blank (it
            never learned to transcribe): before the target is adapted from it.
    """
    if len(sources) < 2:
        raise ValueError(f"adapt_from_best_source needs at least two candidate sources; got {list(sources)}.")
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"adapt_from_best_source num_threads={num_threads!r}: expected an integer >= 1.")
        torch.set_num_threads(num_threads)  # the ranking and any continued pretraining too, not only the CTC runs
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(sources):
        raise ValueError(f"adapt_from_best_source top_k={top_k!r}: expected 1 to {len(sources)} (the sources given).")
    if unlabelled not in ("error", "pretrain"):
        raise ValueError(f"adapt_from_best_source unlabelled={unlabelled!r}: expected 'error' or 'pretrain'.")
    if _unlabelled(target):
        raise ValueError("target: audio without transcripts; the target needs transcribed train and validation splits.")
    untranscribed = sorted(n for n, c in sources.items() if _unlabelled(c))
    if untranscribed and unlabelled == "error":
        raise ValueError(f"source {untranscribed[0]!r} has audio but no transcripts: give its transcripts, or pass "
                         "unlabelled='pretrain' (--unlabelled pretrain) to continue a wav2vec2 encoder's "
                         "self-supervised pretraining on its audio.")
    if untranscribed:
        load_for_pretraining(model)  # a model continued pretraining cannot train stops here
    tgt = ctc_splits(target, "target", train_utterances=target_utterances, seed=seed)  # checked before any training
    src = {name: (_audio_only(c, f"source {name!r}") if _unlabelled(c) else ctc_splits(c, f"source {name!r}"))
           for name, c in sources.items()}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda line: None)
    # what made each stage: a stage is reused only when all of it is the same
    data = {name: corpus_fingerprint(s) for name, s in src.items()}
    target_data = corpus_fingerprint(tgt)
    settings = {"sources": sorted(sources), "source_data": data, "target_data": target_data, "scorer": str(scorer),
                "top_k": top_k, "model": str(model), "seed": seed, "target_utterances": len(tgt["train"]),
                "batch_size": batch_size}
    stopping = {"min_epochs": min_epochs, "ctc_plateau": ctc_plateau}
    source_settings = {"source_epochs": source_epochs, "source_lr": source_lr, "source_patience": source_patience,
                       "pretrain_epochs": pretrain_epochs, **stopping}
    target_settings = {"target_epochs": target_epochs, "target_lr": target_lr, "patience": patience, **stopping}
    scratch_settings = {"scratch_epochs": scratch_epochs, "scratch_lr": scratch_lr, "scratch_patience": scratch_patience,
                        **stopping}

    ranking = _stage(out / "ranking.json", settings)
    if ranking is None:
        audio = {n: s if isinstance(s, list) else s["train"].inputs for n, s in src.items()}
        scores = rank_sources(audio, {"target": tgt["train"].inputs}, backbone=scorer, seed=seed)
        ranking = {"settings": settings, "ranking": scores.rankings[0].ranking, "lid_accuracy": scores.lid_accuracy,
                   "scorer": scores.featurizer}
        _write(out / "ranking.json", ranking)
    chosen = [r["source"] for r in ranking["ranking"][:top_k]]
    made_source = {**settings, "chosen": chosen, **source_settings}
    made_target = {**made_source, **target_settings}
    made_scratch = {**settings, **scratch_settings}
    # every finished stage is checked before any stage trains
    source = _stage(out / "source.json", made_source)
    target_run = _stage(out / "target.json", made_target)
    scratch = _stage(out / "baseline.json", made_scratch) if baseline else None
    say(f"ranking ({scorer}): " + ", ".join(f"{r['source']} {r['score']:.3f}" for r in ranking["ranking"])
        + f" -> pretrain on {' + '.join(chosen)}")
    common = dict(batch_size=batch_size, seed=seed, progress=progress, num_threads=num_threads, min_epochs=min_epochs,
                  ctc_plateau=ctc_plateau)
    if source is None:
        source = {"settings": made_source,
                  "results": _train_source(chosen, src, out / "source", model, source_epochs, source_lr, source_patience,
                                           pretrain_epochs, common)}
        _write(out / "source.json", source)
    if "all_blank" in source["results"].get("flags", []):
        raise ValueError(f"{out / 'source'}: the source run on {' + '.join(chosen)} ended all-blank (its hypotheses "
                         f"were almost all empty; validation CER {source['results'].get('best_valid_cer') or 1.0:.3f}): "
                         "a target adapted from it would start from a model that never learned to transcribe. Give it "
                         "more epochs or patience (--source-epochs, --source-patience), more data, or other sources.")
    if target_run is None:
        target_run = {"settings": made_target,
                      "results": _adapt(out, source["results"], tgt, target_epochs, target_lr, patience, common)}
        _write(out / "target.json", target_run)
    if baseline and scratch is None:
        scratch = {"settings": made_scratch, "results": _scratch(out, model, tgt, scratch_epochs, scratch_lr,
                                                                 scratch_patience, common)}
        _write(out / "baseline.json", scratch)
    return _report(out, ranking, chosen, source["results"], target_run["results"],
                   scratch["results"] if scratch else None, len(tgt["train"]), "test" in tgt, say)


def _write(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)


def _train_source(chosen: list[str], src: dict[str, Any], run_dir: Path, model: str, epochs: int, lr: float,
                  patience: int, pretrain_epochs: int, common: dict[str, Any]) -> dict[str, Any]:
    """The source stage: continued pretraining on untranscribed audio, or a CTC run on the (pooled) transcribed data."""
    if any(isinstance(src[n], list) for n in chosen):
        audio = [a for n in chosen for a in (src[n] if isinstance(src[n], list) else src[n]["train"].inputs)]
        done = continue_pretraining(model, audio, PretrainArguments(str(run_dir), num_epochs=pretrain_epochs,
                                                                    batch_size=common["batch_size"], seed=common["seed"],
                                                                    progress_bar=common["progress"]))
        return {"kind": "continued pretraining", "utterances": len(audio), "model_dir": done.model_dir,
                "final_loss": done.history[-1]["loss"] if done.history else None, "train_seconds": round(done.seconds, 1)}
    rows = {split: [{"audio": a, "transcript": t} for n in chosen
                    for a, t in zip(src[n][split].inputs, src[n][split].references)]
            for split in ("train", "validation", "test") if all(split in src[n] for n in chosen)}
    data = ctc_splits(rows, "the chosen sources")
    start = TransferModel.from_backbone("audio", model, labels=data["train"].vocabulary, task="ctc", seed=common["seed"])
    results = train_ctc_run(start, data["train"], data["validation"], data.get("test", data["validation"]), run_dir,
                            epochs=epochs, lr=lr, patience=patience, **common)
    return {"kind": "CTC", "utterances": len(data["train"]), "model_dir": str(run_dir / "model"), **results}


def _adapt(out: Path, source: dict[str, Any], tgt: dict[str, Any], epochs: int, lr: float, patience: int,
           common: dict[str, Any]) -> dict[str, Any]:

    vocab = tgt["train"].vocabulary
    if source["kind"] == "CTC":
        model = TransferModel.from_pretrained(source["model_dir"]).with_new_head(vocab, seed=common["seed"])
        copied = model.copied_rows
    else:  # a pretrained encoder: a new CTC head on it
        model = TransferModel.from_backbone("audio", source["model_dir"], labels=vocab, task="ctc", seed=common["seed"])
        copied = 0
    results = train_ctc_run(model, tgt["train"], tgt["validation"], tgt.get("test", tgt["validation"]), out / "target",
                            epochs=epochs, lr=lr, patience=patience, **common)
    write_model_card(out / "target")
    started = model.started_from or {"model": source["model_dir"], "base": None}
    return {**results, "copied_rows": copied, "model_dir": str(out / "target" / "model"),
            "started_from": {**started, "kind": source["kind"]}}


def _scratch(out: Path, model: str, tgt: dict[str, Any], epochs: int, lr: float, patience: int,
             common: dict[str, Any]) -> dict[str, Any]:

    start = TransferModel.from_backbone("audio", model, labels=tgt["train"].vocabulary, task="ctc", seed=common["seed"])
    return train_ctc_run(start, tgt["train"], tgt["validation"], tgt.get("test", tgt["validation"]), out / "baseline",
                         epochs=epochs, lr=lr, patience=patience, **common)


def _flag_report(runs: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """report.md's warnings: each run whose figures may not be trusted (all-blank, still improving at its cap)."""
    lines = [f"- {name}: {text}" for name, results in runs if results
             for text in describe_flags(results.get("flags", []))]
    return ["", "Read these figures with care:", "", *lines] if lines else []


def _report(out: Path, ranking: dict[str, Any], chosen: list[str], source: dict[str, Any], target: dict[str, Any],
            scratch: dict[str, Any] | None, train_utterances: int, has_test: bool,
            say: Callable[[str], None]) -> dict[str, Any]:
    """``adapt.json`` and ``report.md``: the ranking and why it chose as it did, and what the source was worth."""
    scored_on = "test" if has_test else "validation"
    report = {"ranking": ranking["ranking"], "scorer": ranking["scorer"], "lid_accuracy": ranking["lid_accuracy"],
              "source": " + ".join(chosen), "chosen": chosen, "source_results": source,
              "target_results": {**target, "train_utterances": train_utterances, "scored_on": scored_on},
              "baseline_results": scratch, "model_dir": target["model_dir"]}
    rows = ranking["ranking"]
    lead = rows[0]
    interval = lambda r: "undefined" if r["ci"] is None else f"{r['ci'][0]:.3f}-{r['ci'][1]:.3f}"  # noqa: E731
    why = (f"{lead['source']} has the highest average posterior of the source classifier on the target's audio "
           f"({lead['score']:.3f}, 95% bootstrap interval {interval(lead)})")
    if len(rows) > 1 and lead["ci"] is None:
        why += f"; {rows[1]['source']} is next ({rows[1]['score']:.3f}), with too few target utterances for an interval."
    elif len(rows) > 1:
        second = rows[1]
        inside = second["score"] >= lead["ci"][0]  # the next source's score lies within the leader's interval
        overlap = second["ci"][1] >= lead["ci"][0]  # or only the two intervals overlap
        where = ("inside that interval" if inside else
                 f"below that interval, though the two intervals overlap ({interval(second)})" if overlap else
                 f"below that interval, and the two intervals do not overlap ({interval(second)})")
        why += (f"; {second['source']} is next ({second['score']:.3f}), {where}: the choice is "
                + ("not clear-cut." if overlap else "clear-cut."))
    lines = ["# Source choice and transfer", "",
             f"Scorer: `{ranking['scorer']}` (source classifier held-out accuracy {ranking['lid_accuracy']:.3f}).", "",
             "| source | average posterior | interval |", "|---|---|---|",
             *[f"| {r['source']} | {r['score']:.3f} | {interval(r)} |" for r in rows], "",
             f"Chosen: **{' + '.join(chosen)}**: {why}", "",
             f"Target ({train_utterances} training utterances), scored on its {scored_on} split:", "",
             "| start | CER | WER | best epoch |", "|---|---|---|---|",
             f"| pretrained on {' + '.join(chosen)} | {target['test_cer']:.3f} | {target['test_wer']:.3f} | "
             f"{target['best_epoch']} |"]
    if scratch:
        lines.append(f"| random init | {scratch['test_cer']:.3f} | {scratch['test_wer']:.3f} | {scratch['best_epoch']} |")
        report["cer_reduction"] = round(scratch["test_cer"] - target["test_cer"], 4)
    lines += _flag_report([("the source run", source), ("the adapted run", target), ("the random-init run", scratch)])
    lines += ["", f"The adapted model: `{target['model_dir']}`."]
    _write(out / "adapt.json", report)
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode("utf-8"))
    say(f"target CER {target['test_cer']:.3f}" + (f" (random init {scratch['test_cer']:.3f})" if scratch else "")
        + f"; report: {out / 'report.md'}")
    return report
