"""Choosing what to transfer from: the language-ID source scorer, transferability estimators, and their validation."""

from mtransfer.ranking.lid import FbankFeaturizer, SourceRanking, SourceScores, rank_sources
from mtransfer.ranking.transferability import ESTIMATORS, hscore, knn_accuracy, leep, logme, nce
from mtransfer.ranking.validate import Candidate, ValidationReport, correlate, parse_candidate, rank_models, validate_rankings

__all__ = ["ESTIMATORS", "Candidate", "FbankFeaturizer", "SourceRanking", "SourceScores", "ValidationReport", "correlate",
           "hscore", "knn_accuracy", "leep", "logme", "nce", "parse_candidate", "rank_models", "rank_sources",
           "validate_rankings"]
