"""Speech recognition on the shared core: vocabularies (characters, IPA phones), CTC decoding and error rates.

* :mod:`mtransfer.speech.vocabulary`: :class:`Vocabulary`, characters from transcripts in the
  ``Wav2Vec2CTCTokenizer`` convention, or phones from espeak-ng's IPA.
* :mod:`mtransfer.speech.ctc`: greedy CTC decoding and per-utterance edit counts (WER, CER, PER).
* :mod:`mtransfer.speech.presets`: small wav2vec2 configurations for from-scratch work on a CPU.
* :mod:`mtransfer.speech.matrix`: the cross-lingual transfer matrix (pretrain on each source
  language, adapt to each target, measure; check source rankers against it).
"""
