"""The procedure the transfer matrix checks, as one call: rank the sources, pretrain on the best, adapt.

1. A language-ID scorer (:func:`mtransfer.ranking.rank_sources`) ranks the candidate source
   corpora by their average posterior on the target's training audio;
2. a CTC model is trained from scratch on the top-ranked source (its training split, checkpoint
   chosen on its validation split);
3. its encoder, with a new head for the target's units (shared rows copied), is fine-tuned on the
   target's small training set and scored on the target's test split when there is one.

Corpora are given as ``builtin:espeak-asr-LANG`` names (their splits) or as a mapping
``{"train": ..., "validation": ..., "test": ...}`` of anything :func:`mtransfer.load_labeled`
reads with ``audio`` / ``transcript`` columns.

>>> adapt_from_best_source({"hi": "builtin:espeak-asr-hi", "bn": "builtin:espeak-asr-bn"},
...                        "builtin:espeak-asr-mr", "outputs/adapt-mr")  # doctest: +SKIP
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

SPLITS = ("train", "validation", "test")


def ctc_splits(corpus: Any, where: str, vocabulary: Any = None, train_utterances: int | None = None,
               seed: int = 0) -> dict[str, Any]:
    """A corpus's splits as CTC datasets sharing the training split's vocabulary.

    ``train_utterances`` keeps that many training utterances (drawn with ``seed``): the small budget.
    """
    import mtransfer as mt

    if isinstance(corpus, str):
        if not corpus.startswith("builtin:"):
            raise ValueError(f"{where} {corpus!r}: give a builtin:espeak-asr-LANG name or a mapping of splits "
                             "({'train': ..., 'validation': ...}).")
        from mtransfer.builtins import DATA

        if corpus not in DATA or DATA[corpus].task != "ctc":
            raise ValueError(f"{where} {corpus!r}: not a transcribed builtin corpus; expected one of "
                             f"{', '.join(k for k, v in DATA.items() if v.task == 'ctc')}.")
        corpus = DATA[corpus].splits()
        corpus = {s: [{"audio": r["audio"], "transcript": r["transcript"]} for r in rows] for s, rows in corpus.items()}
    missing = [s for s in ("train", "validation") if s not in corpus]
    if missing:
        raise ValueError(f"{where}: no {' or '.join(missing)} split; it has {', '.join(corpus)}.")
    read = lambda data, vocab: mt.load_labeled(data, input_column="audio", label_column="transcript", task="ctc",  # noqa: E731
                                               vocabulary=vocab)
    train = corpus["train"]
    if train_utterances is not None:
        full = read(train, vocabulary)
        if len(full) < train_utterances:
            raise ValueError(f"{where}: {len(full)} training utterances, fewer than the {train_utterances} asked for.")
        keep = sorted(random.Random(seed).sample(range(len(full)), train_utterances))
        train = [{"audio": full.inputs[i], "transcript": full.references[i]} for i in keep]
    out = {"train": read(train, vocabulary)}
    for split in ("validation", "test"):
        if split in corpus:
            out[split] = read(corpus[split], out["train"].vocabulary)
    return out


def adapt_from_best_source(sources: Mapping[str, Any], target: Any, output_dir: str | Path, *, scorer: str = "mfcc",
                           model: str = "builtin:w2v-bert-small", target_utterances: int | None = None,
                           source_epochs: int = 40, target_epochs: int = 60, source_lr: float = 2e-3,
                           target_lr: float = 1e-3, patience: int = 10, batch_size: int = 8, seed: int = 0,
                           progress: bool = False) -> dict[str, Any]:
    """Rank ``sources`` for ``target``, train on the best one, adapt to the target; write ``adapt.json``.

    Args:
        sources: Name -> corpus (at least two). target: The target corpus.
        output_dir: Gets ``source-<name>/`` (the source run), ``target/`` (the adapted model in
            ``target/model``) and ``adapt.json`` (ranking and results).
        scorer: The :func:`~mtransfer.ranking.rank_sources` backbone (``mfcc``, ``mfcc-frames``, ``fbank``, a model).
        model: The encoder the source model starts from.
        target_utterances: Keep this many target training utterances (None: all).
    """
    import mtransfer as mt
    from mtransfer.atomic import atomic_write_json
    from mtransfer.ranking import rank_sources
    from mtransfer.speech.matrix import train_ctc_run

    if len(sources) < 2:
        raise ValueError(f"adapt_from_best_source needs at least two candidate sources; got {list(sources)}.")
    tgt = ctc_splits(target, "target", train_utterances=target_utterances, seed=seed)  # checked before any training
    src = {name: ctc_splits(corpus, f"source {name}") for name, corpus in sources.items()}
    scores = rank_sources({name: s["train"].inputs for name, s in src.items()}, {"target": tgt["train"].inputs},
                          backbone=scorer, seed=seed)
    best = scores.rankings[0].best
    out = Path(output_dir)
    common = dict(patience=patience, batch_size=batch_size, seed=seed, progress=progress)
    chosen = src[best]
    start = mt.TransferModel.from_backbone("audio", model, labels=chosen["train"].vocabulary, task="ctc", seed=seed)
    source_results = train_ctc_run(start, chosen["train"], chosen["validation"], chosen.get("test", chosen["validation"]),
                                   out / f"source-{best}", epochs=source_epochs, lr=source_lr, **common)
    adapted = mt.TransferModel.from_pretrained(out / f"source-{best}" / "model").with_new_head(tgt["train"].vocabulary,
                                                                                               seed=seed)
    target_results = train_ctc_run(adapted, tgt["train"], tgt["validation"], tgt.get("test", tgt["validation"]),
                                   out / "target", epochs=target_epochs, lr=target_lr, **common)
    report = {"ranking": scores.rankings[0].ranking, "scorer": scorer, "lid_accuracy": scores.lid_accuracy,
              "source": best, "source_results": source_results,
              "target_results": {**target_results, "copied_rows": adapted.copied_rows,
                                 "train_utterances": len(tgt["train"]),
                                 "scored_on": "test" if "test" in tgt else "validation"},
              "model_dir": str(out / "target" / "model")}
    atomic_write_json(out / "adapt.json", report)
    return report
