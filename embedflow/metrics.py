"""Retrieval quality: recall@k, MRR@k and nDCG@k with binary relevance.

The definitions are sentence-transformers' ``InformationRetrievalEvaluator``
(tests check agreement): recall@k = relevant ids in the top k / all relevant
ids; MRR@k = 1 / rank of the first relevant id within k (0 if none); nDCG@k =
DCG of the top k over the DCG of an ideal ranking, with gain 1/log2(rank+1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

RECALL_AT = (1, 5, 10)


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def mrr_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for rank, chunk_id in enumerate(ranked[:k], start=1):
        if chunk_id in relevant:
            return 1 / rank
    return 0.0


def _dcg(gains: Iterable[int]) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    ideal = _dcg([1] * min(len(relevant), k))
    return _dcg([1 if chunk_id in relevant else 0 for chunk_id in ranked[:k]]) / ideal


def retrieval_metrics(rankings: dict[str, Sequence[str]], relevant: dict[str, set[str]]) -> dict[str, float]:
    """Mean metrics over the queries; ``rankings`` maps a query id to its ranked chunk ids."""
    rows = []
    for query_id, ranked in rankings.items():
        wanted = relevant[query_id]
        row = {f"recall@{k}": recall_at(ranked, wanted, k) for k in RECALL_AT}
        row["mrr@10"] = mrr_at(ranked, wanted, 10)
        row["ndcg@10"] = ndcg_at(ranked, wanted, 10)
        rows.append(row)
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]} if rows else {}


def percentiles(milliseconds: Sequence[float]) -> dict[str, float]:
    values = np.asarray(milliseconds, dtype=float)
    return {"p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95))}
