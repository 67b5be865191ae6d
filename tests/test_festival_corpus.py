"""The second speech corpus (Festival): its texts, speakers, checks and the matrix's choice of corpus."""

import csv
import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from mtransfer.builtins import festival_corpus as fc
from mtransfer.builtins.speech_corpus import plan_corpus
from mtransfer.experiments.transfer_matrix import MatrixSettings, check_settings

ROOT = Path(__file__).resolve().parent.parent


def test_clean_keeps_words_and_drops_symbols():
    assert fc.festival_clean("\x07temps esgotat: l'entrada $HOME --  ok?") == "temps esgotat: l'entrada HOME ok?"
    assert fc.festival_clean("? नंतर अपरिचीत अक्षर") == "नंतर अपरिचीत अक्षर"
    assert fc.festival_clean("add-stdcall-alias -x 'quoted'") == "add-stdcall-alias x quoted"


@pytest.mark.parametrize("text, language, ok", [
    ("Inserisci il codice di amministratore", "it", True),
    ("Inserisci il PIN di amministratore", "it", False),       # an acronym is spelled out
    ("Attendere 5 secondi prego", "it", False),                 # digits are read by rules we do not transcribe
    ("Příkaz nenalezen v systému", "it", False),                # ř: not in the Italian voice's latin-1
    ("Příkaz nenalezen v systému", "cs", True),
    ("Абзацный отступ, в пикселях", "ru", True),
    ("Абзацный отступ в pixels", "ru", False),                  # another script inside
    ("अंतर्गत त्रुटी", "mr", True),
    ("ok va", "it", False),                                     # needs two words of three letters
])
def test_text_filter(text, language, ok):
    assert fc.festival_text_ok(text, language) is ok


def test_unknown_language_is_named():
    with pytest.raises(ValueError, match="no Festival voice for language 'xx'; known: hi, mr"):
        fc.festival_text_ok("text", "xx")


def test_texts_share_nothing_with_the_espeak_matrix_corpus():
    used = {u.text for u in plan_corpus(["it"], 400, speakers=8, test_speakers=1, seed=0, validation_speakers=1)}
    texts = fc.festival_texts("it")
    assert len(texts) > 1000 and not used & set(texts)
    assert len(fc.festival_texts("it", exclude_espeak=0)) > len(texts)


def test_plan_is_seeded_and_speakers_never_cross_splits():
    plan = fc.plan_festival_corpus(["cs", "it"], 40, speakers=8, seed=3)
    assert plan == fc.plan_festival_corpus(["cs", "it"], 40, speakers=8, seed=3)
    assert plan != fc.plan_festival_corpus(["cs", "it"], 40, speakers=8, seed=4)
    splits = {}
    for u in plan:
        splits.setdefault((u.language, u.speaker), set()).add(u.split)
    assert all(len(s) == 1 for s in splits.values())
    assert sum(u.split == "test" for u in plan) == sum(u.split == "validation" for u in plan) == 10
    looks = {(u.language, u.speaker): (u.voice, u.pitch_cents, u.tempo) for u in plan}
    assert {looks[("cs", k)][0] for k in range(8)} == {"czech_dita", "czech_krb", "czech_machac", "czech_ph"}
    assert len(set(looks.values())) == 16  # every pseudo-speaker its own voice, pitch and tempo
    with pytest.raises(ValueError, match="language 'te': 387 sentences a Festival voice reads, 400 asked"):
        fc.plan_festival_corpus(["te"], 400)


def test_setup_installs_the_voices_the_corpus_needs():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    listed = set(re.findall(r"\b(?:festival|festvox)[\w-]*", setup.split("# --- python environment")[0]))
    assert set(fc.FESTIVAL_PACKAGES) <= listed


def _fake_speech(seconds_per_letter):
    def speak(utterances):
        out = []
        for u in utterances:
            if "rotto" in u.text:
                out.append(RuntimeError(f"festival voice {u.voice} produced no audio for {u.text!r}: LTS_Ruleset"))
                continue
            letters = sum(c.isalpha() for c in u.text)
            rate = seconds_per_letter * (10 if "lettere" in u.text else 1)
            out.append((0.1 * np.sin(np.arange(int(letters * rate * fc.SAMPLE_RATE)) / 7)).astype(np.float32))
        return out
    return speak


def test_failed_and_spelled_out_utterances_are_left_out_and_counted(tmp_path, monkeypatch):
    texts = ["questo testo funziona bene", "questo testo rotto davvero", "altre lettere lette una per una",
             *[f"frase numero {w} del corpus" for w in ("uno", "due", "tre", "quattro", "cinque", "sei", "sette")]]
    monkeypatch.setattr(fc, "festival_texts", lambda language, locale_dir=None: texts)
    monkeypatch.setattr(fc, "speak_many", _fake_speech(0.07))
    out = fc.build_festival_corpus(tmp_path / "c", ["it"], per_language=10, speakers=5, noise_snr=(10.0, 30.0))
    with open(out / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kept = {r["transcript"] for r in rows}
    assert kept == set(texts) - {"questo testo rotto davvero", "altre lettere lette una per una"}
    dropped = {d["transcript"]: d["why"] for d in json.loads((out / "dropped.json").read_text())}
    assert "LTS_Ruleset" in dropped["questo testo rotto davvero"]
    assert "s per letter, over 3.0x the it median" in dropped["altre lettere lette una per una"]
    assert all(10.0 <= float(r["snr"]) <= 30.0 for r in rows)
    summary = fc.festival_summary(out)["it"]
    assert summary["dropped"] == 2 and sum(v for k, v in summary.items() if k != "dropped") == 8


@pytest.mark.skipif(not Path("/usr/share/festival/voices/italian/lp_diphone").is_dir(),
                    reason="apt festvox-italp16k (scripts/setup.sh installs it)")
def test_build_speaks_with_festival_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(fc.FESTIVAL_VOICES, "it", (("lp_diphone", "latin-1"),))  # the voice setup.sh installs
    out = fc.build_festival_corpus(tmp_path / "c", ["it"], per_language=6, speakers=3, validation_speakers=1)
    with open(out / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["split"] for r in rows} == {"train", "validation", "test"}
    for r in rows:
        with wave.open(str(out / r["file_name"]), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            seconds = w.getnframes() / 16000
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert 0.05 < seconds / len(r["transcript"]) < 0.3   # spoken, not spelled out
        assert np.abs(pcm).max() <= 32767 * 10 ** (-1 / 20) + 2  # normalised to -1 dBFS: never clipped
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    fc.build_festival_corpus(tmp_path / "c", ["it"], per_language=6, speakers=3, validation_speakers=1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps  # a rerun resumes, rewrites nothing


@pytest.mark.skipif(not Path("/usr/share/festival/voices/italian/lp_diphone").is_dir(),
                    reason="apt festvox-italp16k (scripts/setup.sh installs it)")
def test_a_sentence_the_voice_cannot_read_fails_alone():
    good = fc.FestivalUtterance("questo testo funziona bene", "it", 0, "lp_diphone", "latin-1", 0, 1.0, "train")
    bad = fc.FestivalUtterance("questo \u00a4 non si legge", "it", 0, "lp_diphone", "latin-1", 0, 1.0, "train")
    first, second, third = fc.speak_many([good, bad, good])
    assert isinstance(second, RuntimeError) and "lp_diphone produced no audio for 'questo \u00a4 non si legge'" in str(second)
    assert isinstance(first, np.ndarray) and np.array_equal(first, third) and len(first) > 16000
    with pytest.raises(RuntimeError, match="produced no audio"):
        fc.speak_festival("questo \u00a4 non si legge", "lp_diphone", "latin-1")
    with pytest.raises(ValueError, match="one voice per call"):
        fc.speak_many([good, fc.FestivalUtterance("x", "it", 0, "pc_diphone", "latin-1", 0, 1.0, "train")])


def test_matrix_settings_name_their_corpus(tmp_path):
    with pytest.raises(ValueError, match="synthesizer='mbrola'; expected 'espeak'"):
        MatrixSettings(synthesizer="mbrola")
    folder = tmp_path / "m"
    folder.mkdir()
    old = {k: v for k, v in json.loads(json.dumps(MatrixSettings().__dict__, default=list)).items()}
    from mtransfer.experiments.transfer_matrix import RUN_FIELDS
    (folder / "settings.json").write_text(json.dumps({k: old[k] for k in RUN_FIELDS if k != "synthesizer"}))
    check_settings(MatrixSettings(), folder)  # a folder from before the second corpus is an espeak one
    with pytest.raises(ValueError, match="synthesizer: 'espeak' there, 'festival' now"):
        check_settings(MatrixSettings(synthesizer="festival"), folder)
