import csv
import wave

import pytest

from mtransfer.builtins.speech_corpus import DEFAULT_LANGUAGES, build_speech_corpus, catalog_texts, clean_text, plan_corpus


def test_every_default_language_has_sentences_in_its_script():
    for language in DEFAULT_LANGUAGES:
        texts = catalog_texts(language)
        assert len(texts) >= 500, language
    assert all(any("\u0980" <= c <= "\u09ff" for c in t) for t in catalog_texts("as")[:50])
    assert not any("\u09af\u09bc" in t for t in catalog_texts("as"))  # YA + NUKTA becomes YYA for espeak
    with pytest.raises(FileNotFoundError, match="no gettext catalogs for language 'xx'"):
        catalog_texts("xx")


def test_clean_text_removes_format_specifiers_accelerators_and_markup():
    assert clean_text("_Open %d files in <b>{folder}</b>...") == "Open files in"
    assert clean_text("Save &As %1$s") == "Save As"
    assert clean_text("l'homme '--flag' ok") == "l'homme --flag ok"


def test_speakers_never_cross_splits():
    plan = plan_corpus(["de", "ru"], per_language=30, speakers=5, test_speakers=1, validation_speakers=1)
    splits = {}
    for u in plan:
        splits.setdefault((u.language, u.speaker), set()).add(u.split)
    assert all(len(s) == 1 for s in splits.values())
    assert {u.split for u in plan} == {"train", "validation", "test"}
    voices = {(u.speaker, u.variant, u.pitch, u.speed) for u in plan}
    assert len({v[0] for v in voices}) == 5 and len(voices) == 5  # one voice per pseudo-speaker, across languages


def test_build_writes_16khz_wavs_and_metadata_and_resumes(tmp_path):
    root = build_speech_corpus(tmp_path / "c", ["as", "en"], per_language=6, speakers=3, workers=2)
    with open(root / "metadata.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and set(rows[0]) == {"file_name", "transcript", "language", "speaker", "variant", "pitch",
                                                "speed", "split"}
    with wave.open(str(root / rows[0]["file_name"])) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getnframes() > 16000 * 0.3
    first = root / rows[0]["file_name"]
    stamp = first.stat().st_mtime_ns
    build_speech_corpus(tmp_path / "c", ["as", "en"], per_language=6, speakers=3, workers=2)
    assert first.stat().st_mtime_ns == stamp  # existing files are kept
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_two_builders_of_one_corpus_do_not_collide(tmp_path, monkeypatch):
    # reproduced on main: two processes opening the cached matrix corpus at once both wrote metadata.csv.tmp,
    # and the second rename failed with FileNotFoundError
    import os
    import threading
    from pathlib import Path

    root = build_speech_corpus(tmp_path / "c", ["en"], per_language=3, speakers=3, workers=1)
    before = (root / "metadata.csv").read_bytes()
    (root / "en" / sorted(os.listdir(root / "en"))[0]).unlink()  # one wav to write again as well
    both = threading.Barrier(2, timeout=20)
    replace = os.replace

    def rename_together(src, dst):  # each builder has written its file before either renames it into place
        if Path(dst).suffix in (".csv", ".wav"):
            both.wait()
        replace(src, dst)

    monkeypatch.setattr(os, "replace", rename_together)
    errors = []

    def build():
        try:
            build_speech_corpus(tmp_path / "c", ["en"], per_language=3, speakers=3, workers=1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert (root / "metadata.csv").read_bytes() == before
    assert len(list((root / "en").glob("*.wav"))) == 3 and not [p for p in root.rglob("*") if ".tmp" in p.name]
