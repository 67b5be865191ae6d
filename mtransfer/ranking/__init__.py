"""Choosing what to transfer from: the language-ID source scorer and transferability estimators."""

from mtransfer.ranking.lid import FbankFeaturizer, SourceRanking, SourceScores, rank_sources
from mtransfer.ranking.transferability import ESTIMATORS, hscore, knn_accuracy, leep, logme, nce

__all__ = ["ESTIMATORS", "FbankFeaturizer", "SourceRanking", "SourceScores", "hscore", "knn_accuracy", "leep", "logme",
           "nce", "rank_sources"]
