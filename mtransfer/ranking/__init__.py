"""Choosing what to transfer from: the language-ID source scorer and transferability estimators.

Checking them against real training runs is an experiment: :mod:`mtransfer.experiments`.
"""

from mtransfer.ranking.lid import FbankFeaturizer, SourceRanking, SourceScores, rank_sources
from mtransfer.ranking.transferability import ESTIMATORS, hscore, knn_accuracy, leep, logme, nce
from mtransfer.ranking.backbones import Candidate, correlate, parse_candidate, rank_models

__all__ = ["ESTIMATORS", "Candidate", "FbankFeaturizer", "SourceRanking", "SourceScores", "correlate", "hscore",
           "knn_accuracy", "leep", "logme", "nce", "parse_candidate", "rank_models", "rank_sources"]
