"""A multilingual speech corpus built offline: gettext catalogs -> espeak-ng -> 16 kHz wav.

Texts come from the translation catalogs under ``/usr/share/locale/<lang>/LC_MESSAGES`` (the
English ``msgid`` strings, and their translations per language), cleaned of format specifiers,
accelerators and markup. espeak-ng speaks them with a voice variant, pitch and speed per
pseudo-speaker; the audio is resampled to 16 kHz with torchaudio and written as 16-bit wav.

The output folder is a ``datasets`` audiofolder::

    out/
      metadata.csv     file_name, transcript, language, speaker, variant, pitch, speed, split
      <lang>/<lang>_<speaker>_<n>.wav

>>> build_speech_corpus("corpus", ["as", "bn"], per_language=50)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import functools
import gettext
import hashlib
import io
import random
import re
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mtransfer.atomic import atomic_file, atomic_write_bytes

LOCALE_DIR = Path("/usr/share/locale")
DEFAULT_LANGUAGES = ("bn", "as", "hi", "mr", "ne", "tr", "es", "pt", "it", "de", "ru", "fr", "en")
VARIANTS = ("m1", "m3", "m7", "f1", "f2", "f4", "klatt", "m2", "f3", "m5")
SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050

INDIC_SCRIPTS = ("bn", "as", "hi", "mr", "ne", "te")  # vowel signs are marks, not letters: a lower letter share
_FORMAT = re.compile(r"%(\d+\$)?[-+ #0]*(\d+|\*)?(\.\d+)?(hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcsSpn%]|\{[^}]*\}|\$\{[^}]*\}|<[^>]+>|&\w+;")
_ACCEL = re.compile(r"(?<=\w)_(?=\w)|^_|(?<=\s)_|&(?=\w)|~")


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence."""

    text: str
    language: str
    speaker: int
    variant: str
    pitch: int
    speed: int
    split: str


def clean_text(text: str) -> str:
    """A catalog string as speakable text: no format specifiers, accelerators, markup or line breaks."""
    text = _FORMAT.sub(" ", text)
    text = _ACCEL.sub("", text)
    text = re.sub(r"[\\/|<>\[\]{}()\"“”«»`*#=_%]+|(?<!\w)'|'(?!\w)", " ", text)
    return re.sub(r"\s+", " ", text).strip(" .:;,-")


def _script_ok(text: str, language: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    visible = [c for c in text if not c.isspace()]
    if len(letters) < 6 or len(letters) < 0.75 * len(visible) * (0.8 if language in INDIC_SCRIPTS else 1):
        return False
    if language == "en":
        return all(c.isascii() for c in letters)
    if language in ("bn", "as"):
        return sum("\u0980" <= c <= "\u09ff" for c in letters) / len(letters) > 0.9
    if language in ("hi", "mr", "ne"):
        return sum("\u0900" <= c <= "\u097f" for c in letters) / len(letters) > 0.9
    if language == "te":
        return sum("\u0c00" <= c <= "\u0c7f" for c in letters) / len(letters) > 0.9
    if language == "ru":
        return sum("\u0400" <= c <= "\u04ff" for c in letters) / len(letters) > 0.9
    return sum(c.isascii() for c in letters) / len(letters) > 0.6  # Latin-script languages (with accents)


def _english_catalogs(locale_dir: Path) -> list[Path]:
    """The catalogs of the best-covered language: their msgids are the English source strings."""
    folders = [d for d in locale_dir.glob("*/LC_MESSAGES") if d.parent.name != "en"]
    if not folders:
        return []
    best = max(folders, key=lambda d: (len(list(d.glob("*.mo"))), d.parent.name))
    return sorted(best.glob("*.mo"))


@functools.lru_cache(maxsize=64)
def catalog_texts(language: str, locale_dir: Path = LOCALE_DIR, min_words: int = 2, max_words: int = 14) -> tuple[str, ...]:
    """Distinct cleaned sentences for ``language`` from every catalog, sorted (``en``: the source
    strings, from the catalogs of the language with the most of them).

    Raises:
        FileNotFoundError: No catalogs for the language.
    """
    from mtransfer.speech.vocabulary import espeak_text

    locale_dir = Path(locale_dir)
    files = _english_catalogs(locale_dir) if language == "en" else sorted((locale_dir / language / "LC_MESSAGES").glob("*.mo"))
    if not files:
        raise FileNotFoundError(f"no gettext catalogs for language {language!r} under {locale_dir}/{language}/LC_MESSAGES.")
    texts: set[str] = set()
    for path in files:
        try:
            with open(path, "rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog  # msgid -> msgstr
        except Exception:  # noqa: BLE001  (a damaged or unusual catalog: skip it)
            continue
        for key, value in catalog.items():
            raw = key[0] if isinstance(key, tuple) else key
            raw = raw if language == "en" else value
            if not isinstance(raw, str) or not raw or "\x00" in raw:
                continue
            text = clean_text(raw)
            text = espeak_text(text, language)  # what the voice reads as a word (Assamese YYA)
            if min_words <= len(text.split()) <= max_words and _script_ok(text, language):
                texts.add(text)
    return tuple(sorted(texts))  # immutable: the result is cached


def _speakers(count: int, seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    return [(VARIANTS[k % len(VARIANTS)], rng.randint(25, 75), rng.randint(140, 190)) for k in range(count)]


def plan_corpus(languages: Sequence[str], per_language: int, speakers: int = 4, test_speakers: int = 1,
                seed: int = 0, locale_dir: Path = LOCALE_DIR, validation_speakers: int = 0,
                voice_per_utterance: bool = False) -> list[Utterance]:
    """Which sentence each pseudo-speaker says.

    The last ``test_speakers`` speakers form the ``test`` split, the ``validation_speakers``
    before them the ``validation`` split, the rest ``train``: no speaker is in two splits. With
    ``voice_per_utterance`` every utterance draws its own voice variant, pitch and speed (the
    speaker index then only assigns the split): no two utterances share a voice by design.
    """
    if speakers <= test_speakers + validation_speakers:
        raise ValueError(f"speakers={speakers} must exceed test_speakers + validation_speakers "
                         f"({test_speakers} + {validation_speakers}).")
    voices = _speakers(speakers, seed)
    plan = []
    for language in languages:
        texts = catalog_texts(language, locale_dir)
        rng = random.Random(f"{seed}-{language}")
        chosen = rng.sample(texts, min(per_language, len(texts)))
        for n, text in enumerate(chosen):
            speaker = n % speakers
            variant, pitch, speed = voices[speaker]
            if voice_per_utterance:
                variant, pitch, speed = rng.choice(VARIANTS), rng.randint(20, 80), rng.randint(130, 200)
            split = speaker_split(speaker, speakers, test_speakers, validation_speakers)
            plan.append(Utterance(text, language, speaker, variant, pitch, speed, split))
    return plan


def corpus_splits(folder: str | Path, label_column: str = "language") -> dict[str, list[dict]]:
    """A built corpus as ``{split: [{"audio": path, "label": ..., "transcript": ..., "speaker": ...}]}``."""
    folder = Path(folder)
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and label_column not in rows[0]:
        raise ValueError(f"{folder / 'metadata.csv'}: no column {label_column!r}; it has {', '.join(rows[0])}.")
    splits: dict[str, list[dict]] = {}
    for r in rows:
        splits.setdefault(r["split"], []).append({"audio": str(folder / r["file_name"]), "label": r[label_column],
                                                  "transcript": r["transcript"], "speaker": r["speaker"]})
    return splits


def speak(text: str, language: str, variant: str = "m1", pitch: int = 50, speed: int = 175) -> np.ndarray:
    """espeak-ng's audio for ``text``, resampled to 16 kHz. Shape: ``(samples,)`` float32 in [-1, 1]."""
    import torch
    import torchaudio

    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed (apt install espeak-ng; scripts/setup.sh does it).")
    voice = f"{language}+{variant}"
    proc = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
                          capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise RuntimeError(f"espeak-ng -v {voice} failed on {text!r}: {proc.stderr.decode(errors='replace').strip()}")
    pcm = np.frombuffer(proc.stdout[44:], dtype="<i2").astype(np.float32) / 32768.0
    wav = torchaudio.functional.resample(torch.from_numpy(pcm), ESPEAK_RATE, SAMPLE_RATE)
    return wav.numpy()


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono wav, written to a temporary name of its own and renamed (so builders running at once
    never write into each other's file)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with atomic_file(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def add_noise(wav: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``wav`` plus pink-ish noise (white noise through a one-pole low-pass) at ``snr_db`` dB SNR."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(len(wav)).astype(np.float32)
    noise = np.empty_like(white)
    acc = 0.0
    for i, w in enumerate(white):  # y[n] = 0.9 y[n-1] + x[n]: more energy at low frequencies, like room noise
        acc = 0.9 * acc + w
        noise[i] = acc
    signal_power = float(np.mean(wav ** 2)) or 1e-8
    noise *= np.sqrt(signal_power / (float(np.mean(noise ** 2)) * 10 ** (snr_db / 10)))
    return np.clip(wav + noise, -1.0, 1.0).astype(np.float32)


def build_speech_corpus(out: str | Path, languages: Iterable[str] = DEFAULT_LANGUAGES, per_language: int = 200,
                        speakers: int = 4, test_speakers: int = 1, seed: int = 0, workers: int = 4,
                        locale_dir: Path = LOCALE_DIR, validation_speakers: int = 0,
                        noise_snr: tuple[float, float] | None = None, voice_per_utterance: bool = False) -> Path:
    """Build (or complete) the corpus in ``out``; existing wav files are kept, so a rerun resumes.

    ``noise_snr=(low, high)`` adds noise at an SNR drawn uniformly per utterance (in dB; the
    draw is a function of the utterance, so a rebuild writes the same audio), recorded in the
    ``snr`` column. ``voice_per_utterance``: see :func:`plan_corpus`.

    Returns:
        The folder, loadable with ``datasets.load_dataset("audiofolder", data_dir=out)`` or
        :func:`mtransfer.load_labeled`.
    """
    out = Path(out)
    plan = plan_corpus(list(languages), per_language, speakers, test_speakers, seed, locale_dir, validation_speakers,
                       voice_per_utterance)
    rows = []
    jobs = []
    for n, u in enumerate(plan):
        digest = hashlib.sha1(f"{u}{noise_snr or ''}".encode()).hexdigest()[:8]
        snr = None if noise_snr is None else round(random.Random(digest).uniform(*noise_snr), 1)
        rel = Path(u.language) / f"{u.language}_s{u.speaker}_{n:05d}_{digest}.wav"
        rows.append({"file_name": rel.as_posix(), "transcript": u.text, "language": u.language, "speaker": f"{u.language}-{u.speaker}",
                     "variant": u.variant, "pitch": u.pitch, "speed": u.speed, "split": u.split,
                     **({"snr": snr} if noise_snr is not None else {})})
        if not (out / rel).is_file():
            jobs.append((u, out / rel, snr, int(digest, 16)))

    def run(job: tuple[Utterance, Path, float | None, int]) -> None:
        u, path, snr, noise_seed = job
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = speak(u.text, u.language, u.variant, u.pitch, u.speed)
        write_wav(path, wav if snr is None else add_noise(wav, snr, noise_seed))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(run, jobs))
    write_metadata(out, rows)
    return out


def speaker_split(speaker: int, speakers: int, test_speakers: int, validation_speakers: int) -> str:
    """The split of pseudo-speaker ``speaker``: the last ``test_speakers`` are the test split, the
    ``validation_speakers`` before them the validation split, the rest train."""
    if speaker >= speakers - test_speakers:
        return "test"
    return "validation" if speaker >= speakers - test_speakers - validation_speakers else "train"


def write_metadata(out: Path, rows: list[dict]) -> None:
    """A corpus's ``metadata.csv``, written only when it changes: a complete corpus is only read, by any number
    of processes at once."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode("utf-8")
    metadata = out / "metadata.csv"
    if not metadata.is_file() or metadata.read_bytes() != data:
        atomic_write_bytes(metadata, data)
