"""embedflow.vectors: the vector math several stages share."""

from __future__ import annotations

import numpy as np

from embedflow.vectors import RunningTopK


def test_running_top_k_equals_a_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 50))
    ids = [f"d{i}" for i in range(50)]
    top = RunningTopK(3, 7)
    for start in range(0, 50, 9):
        top.add(scores[:, start : start + 9], ids[start : start + 9])
    for row in range(3):
        assert list(top.ids[row]) == [ids[i] for i in np.argsort(-scores[row], kind="stable")[:7]]
