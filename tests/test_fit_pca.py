"""embedflow.fit_pca: the PCA a variant is made with, and the sample it is fitted on."""

from __future__ import annotations

import numpy as np

from embedflow.fit_pca import fit_pca, sample_rows


def _low_rank(rows=400, dim=24, rank=6, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, dim)) + 0.01 * rng.normal(size=(rows, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def test_pca_agrees_with_scikit_learn():
    from sklearn.decomposition import PCA

    data = _low_rank()
    ours = fit_pca(data, 5)
    theirs = PCA(n_components=5, svd_solver="full").fit(data)
    # same subspace, same signs (both use the svd_flip convention), same variance shares
    np.testing.assert_allclose(ours.components, theirs.components_, atol=1e-4)
    np.testing.assert_allclose(ours.mean, theirs.mean_, atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_ratio, theirs.explained_variance_ratio_, rtol=1e-4)
    assert ours.explained_variance_ratio.sum() > 0.9  # rank 6 data: 5 components keep most of it


def test_pca_sample_is_seeded_and_streamed(tmp_path):
    from conftest import synthetic_corpus

    _, vectors = synthetic_corpus(tmp_path, rows=2500, dim=8, batch=500)
    path = tmp_path / "embeddings_synthetic_float32.parquet"
    first, second = sample_rows(path, 300, seed=1), sample_rows(path, 300, seed=1)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (300, 8) and not np.array_equal(first, sample_rows(path, 300, seed=2))
    # every sampled row is a row of the file, in file order
    positions = [int(np.flatnonzero((vectors == row).all(axis=1))[0]) for row in first]
    assert positions == sorted(positions) and len(set(positions)) == 300
    np.testing.assert_array_equal(sample_rows(path, 5000, seed=0), vectors)
