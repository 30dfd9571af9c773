"""Metrics against brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepfm.training.metrics import log_loss, ranking_metrics, roc_auc


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200).astype(np.float32)
    scores = rng.integers(0, 20, 200).astype(np.float32)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_auc_is_nan_with_one_class() -> None:
    assert math.isnan(roc_auc(np.ones(5), np.arange(5.0)))


def test_log_loss_matches_definition_and_clips() -> None:
    labels = np.array([1.0, 0.0, 1.0])
    probabilities = np.array([0.9, 0.2, 0.0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(1e-7)) / 3
    assert log_loss(labels, probabilities) == pytest.approx(expected)


def test_ranking_metrics_on_hand_made_queries() -> None:
    # query 0: target (click) ranked 3rd (two negatives above) -> hit@5, ndcg 1/log2(4)
    # query 1: target (click) ranked 1st -> hit everywhere, ndcg 1
    # query 2: target is not a click -> not counted
    # query 3: target (click) ranked 7th -> miss@5, hit@10
    scores = np.concatenate(
        [
            [0.5, 0.9, 0.8, 0.1],  # query 0
            [0.9, 0.1, 0.2],  # query 1
            [0.1, 0.9],  # query 2
            [0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.1, 0.2],  # query 3: 6 negatives above
        ]
    )
    labels = np.zeros(len(scores))
    is_target = np.zeros(len(scores), dtype=bool)
    query_ids = np.repeat([0, 1, 2, 3], [4, 3, 2, 9])
    for start in (0, 4, 7, 9):
        is_target[start] = True
    labels[[0, 4, 9]] = 1.0
    out = ranking_metrics(scores, labels, query_ids, is_target)
    assert out["num_queries"] == 3
    assert out["hr@5"] == pytest.approx(2 / 3)
    assert out["hr@10"] == pytest.approx(1.0)
    assert out["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1.0) / 3)
    assert out["ndcg@10"] == pytest.approx((1 / math.log2(4) + 1.0 + 1 / math.log2(8)) / 3)
