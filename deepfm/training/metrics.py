"""Evaluation metrics: AUC and logloss over all rows, HR@K and NDCG@K over ranking queries.

A ranking query is one held-out rating plus its sampled negatives. HR@K and NDCG@K count only
queries whose held-out rating is a click (label 1); its rank is the number of rows of the same
query scored strictly higher (He et al. 2017, "Neural Collaborative Filtering", protocol).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RANKING_CUTOFFS = (5, 10, 20)
_EPS = 1e-7


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties averaged); NaN when one class is absent."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(probabilities.astype(np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def ranking_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    query_ids: np.ndarray,
    is_target: np.ndarray,
    cutoffs: tuple[int, ...] = RANKING_CUTOFFS,
) -> dict[str, float]:
    """HR@K and NDCG@K over the queries whose held-out (target) row is a click.

    Args:
        scores: (N,) model scores.
        labels: (N,) 0/1 labels.
        query_ids: (N,) query of each row, -1 for none.
        is_target: (N,) True for each query's held-out row.
        cutoffs: the K values.

    Returns:
        {"hr@K": ..., "ndcg@K": ..., "num_queries": ...}; NaN metrics when there is no such query.
    """
    in_query = query_ids >= 0
    num_queries = int(query_ids.max()) + 1 if in_query.any() else 0
    target_score = np.full(num_queries, np.nan)
    target_label = np.zeros(num_queries)
    target_score[query_ids[is_target]] = scores[is_target]
    target_label[query_ids[is_target]] = labels[is_target]
    higher = in_query & ~is_target
    higher[higher] = scores[higher] > target_score[query_ids[higher]]
    rank = np.bincount(query_ids[higher], minlength=num_queries)  # rows scored above the target
    counted = target_label > 0.5
    out: dict[str, float] = {"num_queries": float(counted.sum())}
    for k in cutoffs:
        hit = rank[counted] < k
        gain = np.where(hit, 1.0 / np.log2(rank[counted] + 2.0), 0.0)
        out[f"hr@{k}"] = float(hit.mean()) if counted.any() else float("nan")
        out[f"ndcg@{k}"] = float(gain.mean()) if counted.any() else float("nan")
    return out
