"""embedflow.evaluate: rankings agree with brute force (the example, evaluated end to end by
Snakemake: test_workflow_evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_corpus
from embedflow.evaluate import answerable, exact_rankings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    _, vectors = synthetic_corpus(folder, 500, 24, precisions=("float32", "float16", "int8", "binary"), batch=128)
    return folder, vectors


def brute_force(scores, k=10):
    return [[f"c{i}" for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


def test_exact_rankings_match_brute_force(corpus):
    folder, vectors = corpus
    queries = vectors[[3, 77, 410]] + 0.01
    ids = ["a", "b", "c"]
    float32 = exact_rankings(folder / "embeddings_synthetic_float32.parquet", ids, queries)
    assert list(float32.values()) == brute_force(queries @ vectors.T)
    bits = (vectors > 0).astype(int)
    hamming = -(np.abs((queries > 0).astype(int)[:, None, :] - bits[None]).sum(-1))
    binary = exact_rankings(folder / "embeddings_synthetic_binary.parquet", ids, queries)
    for got, row in zip(binary.values(), hamming):
        expected_distance = sorted(-row)[:10]
        got_distance = [-row[int(chunk[1:])] for chunk in got]
        assert got_distance == expected_distance  # ties may order differently; distances may not
    rescored = exact_rankings(folder / "embeddings_synthetic_binary.parquet", ids, queries, rescore=50)
    assert [ranked[0] for ranked in rescored.values()] == ["c3", "c77", "c410"]
    int8 = exact_rankings(folder / "embeddings_synthetic_int8.parquet", ids, queries)
    assert [ranked[0] for ranked in int8.values()] == ["c3", "c77", "c410"]


def test_queries_without_embedded_relevant_chunks_are_left_out():
    ids, queries, relevant, skipped = answerable(
        ["q1", "q2"], np.zeros((2, 4)), {"q1": {"a", "z"}, "q2": {"y"}}, {"a", "b"}
    )
    assert ids == ["q1"] and relevant == {"q1": {"a"}} and skipped == ["q2"] and queries.shape == (1, 4)
