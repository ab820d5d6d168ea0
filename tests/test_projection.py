"""embedflow.projection: a fitted PCA or a truncation applied to vectors, saved and loaded."""

from __future__ import annotations

import numpy as np
import pytest

from embedflow.errors import ConfigError
from embedflow.fit_pca import fit_pca
from embedflow.projection import Projection
from test_fit_pca import _low_rank


def test_projection_reduces_renormalizes_and_survives_a_round_trip(tmp_path):
    data = _low_rank()
    projection = fit_pca(data, 4)
    projected = projection.apply(data)
    assert projected.shape == (400, 4) and projected.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1, atol=1e-5)
    projection.save(tmp_path / "p.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    again = Projection.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(again.apply(data), projected)
    truncated = Projection.truncation(3).apply(data)
    expected = data[:, :3] / np.linalg.norm(data[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(truncated, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="cannot reduce 24 dims to 30"):
        Projection.truncation(30).check_input(24, "here")
