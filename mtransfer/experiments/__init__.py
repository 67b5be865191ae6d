"""Experiments: code that trains models to answer a question, built on the library below it.

Each module calls the core (:mod:`mtransfer.model`, :mod:`mtransfer.training`, :mod:`mtransfer.ranking`,
:mod:`mtransfer.tabular`...) and the core never imports them:

* :mod:`~mtransfer.experiments.demo`: the embedded default job (``mtransfer demo``);
* :mod:`~mtransfer.experiments.speech_demo`: cross-lingual transfer for speech recognition;
* :mod:`~mtransfer.experiments.self_taught_comparison`: random vs self-taught word vectors vs a sentence encoder;
* :mod:`~mtransfer.experiments.transfer_matrix`: the 6 x 5 cross-lingual transfer matrix and the ranker check;
* :mod:`~mtransfer.experiments.source_choice`: rank the sources, train on the best, adapt (``mtransfer adapt-speech``);
* :mod:`~mtransfer.experiments.validate_rankings`: transferability estimators against real fine-tuning;
* :mod:`~mtransfer.experiments.tabular_comparison`: a table's columns, deep features, both (``mtransfer tabular``).
"""
