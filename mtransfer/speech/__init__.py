"""Speech recognition on the shared core: vocabularies (characters, IPA phones), CTC decoding and error rates.

* :mod:`mtransfer.speech.vocabulary`: :class:`Vocabulary`, characters from transcripts in the
  ``Wav2Vec2CTCTokenizer`` convention, or phones from espeak-ng's IPA.
* :mod:`mtransfer.speech.ctc`: greedy CTC decoding and per-utterance edit counts (WER, CER, PER).
* :mod:`mtransfer.speech.presets`: small wav2vec2 configurations for from-scratch work on a CPU.
* :mod:`mtransfer.speech.data`: transcripts as CTC targets; :mod:`mtransfer.speech.decoding`: beam search;
  :mod:`mtransfer.speech.pretrain`: continued self-supervised pretraining of wav2vec2 encoders.

The cross-lingual transfer matrix and source choice are experiments: :mod:`mtransfer.experiments`.
"""
