"""A second speech corpus, independent of the espeak-ng one: gettext texts -> Festival -> 16 kHz wav.

espeak-ng's voices are formant synthesis from rules, one engine for every language; a ranker or a
transfer result measured only on them may hold for espeak-ng alone. Festival's Debian voices are
built from human recordings (diphone, unit-selection and HTS voices: Hindi, Marathi and Telugu by
one speaker each, Russian, Czech by four, Catalan, Finnish by two, Italian by two, English), so the
same experiment on them is a check with another synthesizer, other speakers and other texts.

- **Texts**: the languages' gettext catalogs (:func:`~mtransfer.builtins.speech_corpus.catalog_texts`),
  only sentences (cleaned of symbols, no digits, no acronyms, two words of
  three letters or more) whose letters all belong to the language's script and the voice's character set
  (a Festival voice spells out or drops what it cannot read), and none that the espeak-ng matrix
  corpus uses (``exclude_espeak``): the two corpora share no sentence.
- **Speakers**: pseudo-speaker k speaks with the language's voice k mod (voices), its pitch shifted
  by a seeded amount (-250..+250 cents) and its tempo scaled (0.85..1.15) by sox, as the espeak
  corpus varies its voices.
- **Checks**: an utterance Festival could not synthesise, or whose duration per letter is more than
  three times its language's median (a word spelled out letter by letter), is left out and counted
  in ``dropped.json``.

The folder has the espeak corpus's layout (``metadata.csv`` with file_name, transcript, language,
speaker, voice, pitch_cents, tempo, split), so :class:`~mtransfer.experiments.transfer_matrix.CorpusFolder`
and ``scripts/transfer_matrix.py --synthesizer festival`` read it as they read the espeak one.

Needs apt ``festival`` and the voices in :data:`FESTIVAL_PACKAGES` (``scripts/setup.sh --festival``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
import subprocess
import tempfile
import unicodedata
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mtransfer.atomic import atomic_write_json
from mtransfer.builtins.speech_corpus import (LOCALE_DIR, SAMPLE_RATE, catalog_texts, plan_corpus, speaker_split,
                                              write_metadata)

# language -> ((Festival voice, the text encoding it reads), ...)
FESTIVAL_VOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "hi": (("hindi_NSK_diphone", "utf-8"),),
    "mr": (("marathi_NSK_diphone", "utf-8"),),
    "te": (("telugu_NSK_diphone", "utf-8"),),
    "ru": (("msu_ru_nsh_clunits", "utf-8"),),
    "cs": (("czech_dita", "iso-8859-2"), ("czech_krb", "iso-8859-2"), ("czech_machac", "iso-8859-2"),
           ("czech_ph", "iso-8859-2")),
    "ca": (("upc_ca_ona_hts", "latin-1"),),
    "fi": (("suo_fi_lj_diphone", "latin-1"), ("hy_fi_mv_diphone", "latin-1")),
    "it": (("lp_diphone", "latin-1"), ("pc_diphone", "latin-1")),
    "en": (("kal_diphone", "ascii"), ("ked_diphone", "ascii"), ("cmu_us_slt_arctic_hts", "ascii")),
}
FESTIVAL_PACKAGES = ("festival", "festival-hi", "festival-mr", "festival-te", "festival-czech", "festival-ca",
                     "festvox-hi-nsk", "festvox-mr-nsk", "festvox-te-nsk", "festvox-ru", "festvox-czech-dita",
                     "festvox-czech-krb", "festvox-czech-machac", "festvox-czech-ph", "festvox-ca-ona-hts",
                     "festvox-suopuhe-lj", "festvox-suopuhe-mv", "festvox-italp16k", "festvox-itapc16k",
                     "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
_SCRIPTS = {"hi": ("\u0900", "\u097f"), "mr": ("\u0900", "\u097f"), "te": ("\u0c00", "\u0c7f"), "ru": ("\u0400", "\u04ff")}
SPELLED_OUT = 3.0  # seconds per letter above this many times the language's median: left out


@dataclass(frozen=True)
class FestivalUtterance:
    text: str
    language: str
    speaker: int
    voice: str
    encoding: str
    pitch_cents: int
    tempo: float
    split: str


def festival_clean(text: str) -> str:
    """``text`` as a Festival voice is given it (and as its transcript): only letters, marks and digits, an
    apostrophe or hyphen inside a word, and ``.,;:?!`` right after a word; whatever else becomes a space
    (a voice stops at a symbol its letter-to-sound rules do not know)."""
    out = []
    for i, c in enumerate(text):
        category = unicodedata.category(c)
        prev, nxt = text[i - 1] if i else " ", text[i + 1] if i + 1 < len(text) else " "
        if category[0] in "LMN":
            out.append(c)
        elif c in "'-" and prev.isalpha() and nxt.isalpha():
            out.append(c)
        elif c in ".,;:?!" and unicodedata.category(prev)[0] in "LMN":
            out.append(c)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def festival_text_ok(text: str, language: str) -> bool:
    """Whether every letter of ``text`` is one the language's Festival voices read (its script, and a
    character their text encoding holds)."""
    if language not in FESTIVAL_VOICES:
        raise ValueError(f"no Festival voice for language {language!r}; known: {', '.join(FESTIVAL_VOICES)}.")
    encoding = FESTIVAL_VOICES[language][0][1]
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    if language in _SCRIPTS:
        low, high = _SCRIPTS[language]
        if not all(low <= c <= high for c in letters):
            return False
    elif not all(unicodedata.name(c, "").startswith("LATIN") for c in letters):
        return False
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    if any(c.isdigit() for c in text):  # numbers are read by rules we do not transcribe
        return False
    # an acronym (PIN, CVS) or a lone letter is spelled out; a sentence needs two words of three letters
    words = text.split()
    if any(sum(c.isalpha() for c in w) >= 2 and w.isupper() for w in words):
        return False
    return sum(sum(c.isalpha() for c in w) >= 3 for w in words) >= 2


def festival_texts(language: str, locale_dir: Path = LOCALE_DIR, exclude_espeak: int = 400) -> list[str]:
    """The catalog sentences a Festival voice reads, minus the ``exclude_espeak`` per language the espeak-ng
    matrix corpus draws (its default size; 0: none excluded)."""
    texts = sorted({c for c in map(festival_clean, catalog_texts(language, locale_dir))
                    if len(c.split()) >= 2 and festival_text_ok(c, language)})
    if exclude_espeak:
        used = {u.text for u in plan_corpus([language], exclude_espeak, speakers=8, test_speakers=1, seed=0,
                                            locale_dir=locale_dir, validation_speakers=1)}
        texts = [t for t in texts if t not in used]
    return texts


def plan_festival_corpus(languages: Sequence[str], per_language: int, speakers: int = 8, test_speakers: int = 1,
                         validation_speakers: int = 1, seed: int = 0,
                         locale_dir: Path = LOCALE_DIR) -> list[FestivalUtterance]:
    """Which sentence each pseudo-speaker says (the last speakers are the test, then the validation split)."""
    if speakers <= test_speakers + validation_speakers:
        raise ValueError(f"speakers={speakers} must exceed test_speakers + validation_speakers "
                         f"({test_speakers} + {validation_speakers}).")
    plan = []
    for language in languages:
        texts = festival_texts(language, locale_dir)
        if len(texts) < per_language:
            raise ValueError(f"language {language!r}: {len(texts)} sentences a Festival voice reads, "
                             f"{per_language} asked.")
        rng = random.Random(f"festival-{seed}-{language}")
        voices = FESTIVAL_VOICES[language]
        looks = [(voices[k % len(voices)], rng.randint(-250, 250), round(rng.uniform(0.85, 1.15), 3))
                 for k in range(speakers)]
        for n, text in enumerate(rng.sample(texts, per_language)):
            speaker = n % speakers
            (voice, encoding), cents, tempo = looks[speaker]
            split = speaker_split(speaker, speakers, test_speakers, validation_speakers)
            plan.append(FestivalUtterance(text, language, speaker, voice, encoding, cents, tempo, split))
    return plan


def _require_tools() -> None:
    for exe in ("festival", "sox"):
        if shutil.which(exe) is None:
            raise FileNotFoundError(f"{exe} is not installed (bash scripts/setup.sh --festival installs Festival, "
                                    f"its voices and sox).")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shape(raw: Path, out: Path, pitch_cents: int, tempo: float) -> np.ndarray:
    """sox: pitch shift, tempo, 16 kHz, peak at -1 dBFS (voices and a pitch shift reach full scale); no dither,
    so a rebuild writes the same audio."""
    effects = ["pitch", str(pitch_cents)] if pitch_cents else []
    effects += ["tempo", "-s", str(tempo)] if tempo != 1.0 else []
    effects += ["rate", str(SAMPLE_RATE), "norm", "-1"]
    proc = subprocess.run(["sox", "-D", str(raw), "-b", "16", "-c", "1", str(out), *effects], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed on {raw}: {proc.stderr.decode(errors='replace').strip()}")
    with wave.open(str(out), "rb") as w:
        if (w.getsampwidth(), w.getnchannels(), w.getframerate()) != (2, 1, SAMPLE_RATE):
            raise RuntimeError(f"sox wrote {w.getsampwidth() * 8}-bit, {w.getnchannels()}-channel, "
                               f"{w.getframerate()} Hz audio; expected 16-bit mono {SAMPLE_RATE} Hz.")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def speak_many(utterances: Sequence[FestivalUtterance]) -> list[np.ndarray | RuntimeError]:
    """Festival's audio for utterances of one voice, in one Festival process (it loads the voice once: ~20x
    faster than a process per utterance), each pitch-shifted and tempo-scaled by sox, at 16 kHz: per
    utterance a ``(samples,)`` float32 array in [-1, 1], or the error that left it without audio (text
    the voice's letter-to-sound rules cannot read).

    Raises:
        FileNotFoundError: festival or sox is not installed.
        ValueError: the utterances are not all of one voice.
    """
    if not utterances:
        return []
    _require_tools()
    voices = {(u.voice, u.encoding) for u in utterances}
    if len(voices) != 1:
        raise ValueError(f"speak_many: one voice per call, got {sorted(v for v, _ in voices)}.")
    voice, encoding = voices.pop()
    with tempfile.TemporaryDirectory(prefix="mtransfer-festival-") as tmp:
        folder = Path(tmp)
        lines = [f"(voice_{voice})"]
        for i, u in enumerate(utterances):  # unwind-protect: a sentence the voice cannot read fails alone
            lines.append(f"(unwind-protect (utt.save.wave (utt.synth (Utterance Text {_scheme_string(u.text)})) "
                         f"{_scheme_string(str(folder / f'{i}.raw.wav'))} 'riff) nil)")
        script = folder / "speak.scm"
        script.write_bytes(("\n".join(lines) + "\n").encode(encoding))
        proc = subprocess.run(["festival", "-b", str(script)], capture_output=True, check=False)
        detail = " ".join(proc.stderr.decode(errors="replace").split())[-300:]
        results: list[np.ndarray | RuntimeError] = []
        for i, u in enumerate(utterances):
            raw = folder / f"{i}.raw.wav"
            if not raw.is_file() or raw.stat().st_size <= 44 or raw.read_bytes()[:4] != b"RIFF":
                results.append(RuntimeError(f"festival voice {voice} produced no audio for {u.text!r}"
                                            + (f" (festival's last messages for its batch: {detail})" if detail else "")))
                continue
            results.append(_shape(raw, folder / f"{i}.wav", u.pitch_cents, u.tempo))
    return results


def speak_festival(text: str, voice: str, encoding: str = "utf-8", pitch_cents: int = 0,
                   tempo: float = 1.0) -> np.ndarray:
    """Festival's audio for ``text`` in ``voice``, pitch-shifted and tempo-scaled by sox, at 16 kHz.
    Shape ``(samples,)`` float32 in [-1, 1].

    Raises:
        FileNotFoundError: festival or sox is not installed.
        RuntimeError: the voice produced no audio (an unknown voice, or text it cannot read).
    """
    result = speak_many([FestivalUtterance(text, "", 0, voice, encoding, pitch_cents, tempo, "")])[0]
    if isinstance(result, RuntimeError):
        raise result
    return result


BATCH = 64  # utterances per Festival process


def build_festival_corpus(out: str | Path, languages: Sequence[str], per_language: int = 400, speakers: int = 8,
                          test_speakers: int = 1, validation_speakers: int = 1, seed: int = 0, workers: int = 2,
                          locale_dir: Path = LOCALE_DIR, noise_snr: tuple[float, float] | None = None) -> Path:
    """Build (or complete) the corpus in ``out``; existing wav files are kept, so a rerun resumes. Returns ``out``.

    ``noise_snr=(low, high)``: noise at an SNR drawn per utterance (a function of the utterance), as
    :func:`~mtransfer.builtins.speech_corpus.build_speech_corpus` adds it, in the ``snr`` column.
    """
    from mtransfer.builtins.speech_corpus import add_noise, write_wav

    out = Path(out)
    plan = plan_festival_corpus(list(languages), per_language, speakers, test_speakers, validation_speakers, seed,
                                locale_dir)
    items = []
    for n, u in enumerate(plan):
        digest = hashlib.sha1(f"{u!r}{noise_snr or ''}".encode()).hexdigest()[:8]
        snr = None if noise_snr is None else round(random.Random(digest).uniform(*noise_snr), 1)
        items.append((u, Path(u.language) / f"{u.language}_s{u.speaker}_{n:05d}_{digest}.wav", snr, int(digest, 16)))

    pending = [item for item in items if not (out / item[1]).is_file()]
    by_voice: dict[str, list] = {}
    for item in pending:
        by_voice.setdefault(item[0].voice, []).append(item)
    batches = [group[i:i + BATCH] for group in by_voice.values() for i in range(0, len(group), BATCH)]

    def run(batch: list[tuple[FestivalUtterance, Path, float | None, int]]) -> dict[Path, str]:
        errors = {}
        for (u, rel, snr, noise_seed), wav in zip(batch, speak_many([b[0] for b in batch])):
            if isinstance(wav, RuntimeError):
                errors[rel] = str(wav)
                continue
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_wav(out / rel, wav if snr is None else add_noise(wav, snr, noise_seed))
        return errors

    errors_by: dict[Path, str] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for errors in pool.map(run, batches):
            errors_by.update(errors)
    rows, dropped = [], []
    seconds_per_letter: dict[str, list[float]] = {}
    kept = []
    snrs = {rel: snr for _, rel, snr, _ in items}
    for u, rel, _, _ in items:
        if not (out / rel).is_file():
            dropped.append({"file_name": rel.as_posix(), "transcript": u.text, "why": errors_by.get(rel, "no audio")})
            continue
        letters = sum(c.isalpha() for c in u.text)
        rate = ((out / rel).stat().st_size - 44) / 2 / SAMPLE_RATE / max(1, letters)
        seconds_per_letter.setdefault(u.language, []).append(rate)
        kept.append((u, rel, rate))
    medians = {language: float(np.median(r)) for language, r in seconds_per_letter.items()}
    for u, rel, rate in kept:
        if rate > SPELLED_OUT * medians[u.language]:
            dropped.append({"file_name": rel.as_posix(), "transcript": u.text,
                            "why": f"{rate:.3f} s per letter, over {SPELLED_OUT}x the {u.language} median "
                                   f"{medians[u.language]:.3f} (spelled out?)"})
            continue
        rows.append({"file_name": rel.as_posix(), "transcript": u.text, "language": u.language,
                     "speaker": f"{u.language}-{u.speaker}", "voice": u.voice, "pitch_cents": u.pitch_cents,
                     "tempo": u.tempo, "split": u.split, **({"snr": snrs[rel]} if noise_snr is not None else {})})
    if not rows:
        raise RuntimeError(f"{out}: Festival produced no usable utterance; see the first error: "
                           f"{dropped[0]['why'] if dropped else 'none'}")
    atomic_write_json(out / "dropped.json", dropped)
    write_metadata(out, rows)
    return out


def festival_summary(folder: str | Path) -> dict[str, dict[str, int]]:
    """Utterances per language and split in a built corpus, and how many were left out."""
    folder = Path(folder)
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    summary: dict[str, dict[str, int]] = {}
    for r in rows:
        summary.setdefault(r["language"], {}).setdefault(r["split"], 0)
        summary[r["language"]][r["split"]] += 1
    dropped = json.loads((folder / "dropped.json").read_text()) if (folder / "dropped.json").is_file() else []
    for d in dropped:
        language = d["file_name"].split("/")[0]
        summary.setdefault(language, {}).setdefault("dropped", 0)
        summary[language]["dropped"] += 1
    return summary
