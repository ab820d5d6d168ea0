"""The retrieval metrics agree with sentence-transformers and with values known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedflow.metrics import mrr_at, ndcg_at, recall_at, retrieval_metrics


def test_hand_made_case():
    ranked = ["d3", "d1", "d9", "d2"]
    relevant = {"d1", "d2"}
    assert recall_at(ranked, relevant, 1) == 0
    assert recall_at(ranked, relevant, 2) == 0.5
    assert recall_at(ranked, relevant, 4) == 1
    assert mrr_at(ranked, relevant) == 0.5
    assert ndcg_at(ranked, relevant) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert mrr_at(["x"], {"d1"}) == 0 and ndcg_at(["x"], {"d1"}) == 0
    means = retrieval_metrics({"a": ranked, "b": ["d5"]}, {"a": relevant, "b": {"d5"}})
    assert means["mrr@10"] == pytest.approx((0.5 + 1) / 2)
    assert means["recall@1"] == pytest.approx(0.5)


def test_agrees_with_information_retrieval_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rng = np.random.default_rng(0)
    corpus = {f"d{i}": f"doc {i}" for i in range(40)}
    queries = {f"q{i}": f"query {i}" for i in range(15)}
    relevant = {q: set(rng.choice(list(corpus), size=rng.integers(1, 4), replace=False)) for q in queries}
    scores = rng.normal(size=(len(queries), len(corpus))).astype(np.float32)
    evaluator = InformationRetrievalEvaluator(
        queries, corpus, relevant, accuracy_at_k=[1], precision_recall_at_k=[1, 5, 10], mrr_at_k=[10], ndcg_at_k=[10],
        map_at_k=[10], write_csv=False,
    )
    results = [
        [{"corpus_id": cid, "score": float(scores[qi, ci])} for ci, cid in enumerate(corpus)]
        for qi in range(len(queries))
    ]
    expected = evaluator.compute_metrics(results)
    corpus_ids = list(corpus)
    rankings = {
        q: [corpus_ids[i] for i in sorted(range(len(corpus)), key=lambda i: (-scores[qi, i], corpus_ids[i]))]
        for qi, q in enumerate(queries)
    }
    ours = retrieval_metrics(rankings, relevant)
    for k in (1, 5, 10):
        assert ours[f"recall@{k}"] == pytest.approx(expected["recall@k"][k])
    assert ours["mrr@10"] == pytest.approx(expected["mrr@k"][10])
    assert ours["ndcg@10"] == pytest.approx(expected["ndcg@k"][10])
