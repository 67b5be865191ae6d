"""CTC vocabularies: characters from the training transcripts, or IPA phones from espeak-ng.

Both follow the Hugging Face ``Wav2Vec2CTCTokenizer`` convention, so an exported model's
tokenizer decodes exactly as mtransfer does: id 0 is ``[PAD]`` (the CTC blank), 1 is ``[UNK]``,
2 is the word delimiter ``|``, then the units sorted. A transcript becomes units (characters,
or phones) with ``|`` between words; decoding joins the units and turns ``|`` into a space, so a
phone transcript reads as IPA words (``həˈloʊ wɜːld`` without the stress marks).

Normalisation (before either): Unicode NFC, lower case (optional), the characters in ``drop``
removed (punctuation by default), whitespace collapsed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

PAD, UNK, DELIMITER = "[PAD]", "[UNK]", "|"
SPECIALS = (PAD, UNK, DELIMITER)
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»‘’“”„…–—।॥"
STRESS = "ˈˌ"
KINDS = ("characters", "phones")


@dataclass
class Vocabulary:
    """A CTC output vocabulary and the text normalisation that goes with it.

    Attributes:
        symbols: Units in id order; ``symbols[0]`` is the blank ``[PAD]``, then ``[UNK]`` and ``|``.
        kind: ``characters`` or ``phones``.
        lowercase: Lower-case transcripts first.
        drop: Characters removed before splitting into units (punctuation by default).
        language: The espeak-ng voice that phonemizes transcripts (``phones`` only), e.g. ``hi``.

    >>> vocab = Vocabulary.from_texts(["Hello, world!", "low"])
    >>> vocab.symbols[:4], vocab.encode("hello")[0]
    (['[PAD]', '[UNK]', '|', 'd'], [5, 4, 6, 6, 7])
    >>> vocab.decode([5, 5, 0, 4, 6, 0, 6, 7, 2, 7])
    'hello o'
    """

    symbols: list[str]
    kind: str = "characters"
    lowercase: bool = True
    drop: str = PUNCTUATION
    language: str | None = None
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Vocabulary kind={self.kind!r}; expected one of {', '.join(KINDS)}.")
        if list(self.symbols[:3]) != list(SPECIALS):
            raise ValueError(f"a CTC vocabulary starts with {list(SPECIALS)} (blank, unknown, word delimiter); "
                             f"got {list(self.symbols[:3])}.")
        dupes = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
        if dupes:
            raise ValueError(f"the vocabulary lists {dupes} twice.")
        if self.kind == "phones" and not self.language:
            raise ValueError("a phone vocabulary needs the espeak-ng voice of its transcripts (language='hi', ...).")
        self._index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts: Iterable[str], *, kind: str = "characters", lowercase: bool = True,
                   drop: str = PUNCTUATION, language: str | None = None, extra: Sequence[str] = ()) -> Vocabulary:
        """The units of ``texts`` (sorted), plus ``extra`` units (e.g. the phones of other languages)."""
        probe = cls(list(SPECIALS), kind=kind, lowercase=lowercase, drop=drop, language=language)
        counts: Counter[str] = Counter()
        for units in probe.units_of(list(texts)):
            counts.update(units)
        found = sorted((set(counts) | set(extra)) - set(SPECIALS))
        return cls([*SPECIALS, *found], kind=kind, lowercase=lowercase, drop=drop, language=language)

    def merged(self, other: Vocabulary) -> Vocabulary:
        """This vocabulary with ``other``'s units appended (a shared inventory for several languages)."""
        new = [s for s in other.symbols if s not in self._index]
        return Vocabulary([*self.symbols, *new], kind=self.kind, lowercase=self.lowercase, drop=self.drop,
                          language=self.language)

    # --- text -> units -> ids -----------------------------------------------------------
    def normalize(self, text: str) -> str:
        text = unicodedata.normalize("NFC", str(text))
        if self.lowercase:
            text = text.lower()
        if self.drop:
            text = text.translate({ord(c): " " for c in self.drop})
        return " ".join(text.split())

    def units_of(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text as units with ``|`` between words."""
        normalized = [self.normalize(t) for t in texts]
        if self.kind == "characters":
            return [list(t.replace(" ", DELIMITER)) for t in normalized]
        words = phonemize(normalized, self.language or "")
        return [[u for i, w in enumerate(ws) for u in ([DELIMITER] if i else []) + w] for ws in words]

    def encode(self, text: str) -> tuple[list[int], int]:
        """``(ids, number of units outside the vocabulary)``; unknown units become ``[UNK]``."""
        return self.encode_units(self.units_of([text])[0])

    def encode_units(self, units: Sequence[str]) -> tuple[list[int], int]:
        ids = [self._index.get(u, 1) for u in units]
        return ids, sum(1 for u in units if u not in self._index)

    def decode(self, ids: Sequence[int], *, collapse: bool = True) -> str:
        """A transcript from CTC ids: repeats merged (``collapse``), blanks dropped, ``|`` as a space.

        Exactly what the exported ``Wav2Vec2CTCTokenizer`` decodes (two delimiters apart give two
        spaces; the ends are stripped), so pipeline transcripts equal mtransfer's.
        """
        units = self.decode_units(ids, collapse=collapse)
        return "".join(units).replace(DELIMITER, " ").strip()

    def decode_units(self, ids: Sequence[int], *, collapse: bool = True) -> list[str]:
        out, previous = [], None
        for i in ids:
            i = int(i)
            if not (collapse and i == previous) and i != 0:
                out.append(self.symbols[i] if 0 <= i < len(self.symbols) else UNK)
            previous = i
        return out

    # --- persistence and transformers -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(**{k: v for k, v in data.items() if k in ("symbols", "kind", "lowercase", "drop", "language")})

    def to_tokenizer(self, folder: str | Path | None = None) -> Any:
        """The equivalent ``Wav2Vec2CTCTokenizer`` (``vocab.json``; multi-character phones are whole tokens)."""
        import tempfile

        from transformers import Wav2Vec2CTCTokenizer

        where = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="mtransfer-vocab-"))
        where.mkdir(parents=True, exist_ok=True)
        (where / "vocab.json").write_text(json.dumps(self._index, ensure_ascii=False, indent=1), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(where / "vocab.json"), pad_token=PAD, unk_token=UNK,
                                    word_delimiter_token=DELIMITER, do_lower_case=False, bos_token=None, eos_token=None)


def espeak_text(text: str, language: str) -> str:
    """``text`` as espeak-ng is given it, both to speak (the speech corpus) and to phonemize.

    The Assamese voice spells YA + NUKTA out letter by letter ("antastha ya bindu akar"), yet reads
    the precomposed YYA (U+09DF) within the word. Unicode normalisation (NFC, which transcripts go
    through) decomposes U+09DF into YA + NUKTA, so the precomposed form is restored here.
    """
    if language == "as":
        text = text.replace("\u09af\u09bc", "\u09df")
    return text


def phonemize(texts: Sequence[str], language: str) -> list[list[list[str]]]:
    """IPA phones of each text, per word, from espeak-ng (stress marks removed).

    Raises:
        RuntimeError: espeak-ng is not installed or does not know the voice.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("phone vocabularies need espeak-ng (apt install espeak-ng; scripts/setup.sh installs it).")
    out: list[list[list[str]]] = []
    for text in texts:
        if not text:
            out.append([])
            continue
        proc = subprocess.run([exe, "-q", "--ipa", "--sep=_", "-v", language, espeak_text(text, language)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or "not found" in proc.stderr.lower():
            raise RuntimeError(f"espeak-ng cannot phonemize with voice {language!r}: {proc.stderr.strip()[:200]}")
        words = []
        for word in proc.stdout.split():
            phones = [p.strip(STRESS) for p in word.split("_")]
            phones = [p for p in phones if p]
            if phones:
                words.append(phones)
        out.append(words)
    return out
