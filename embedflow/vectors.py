"""Vector math that several stages share: unit length, row cosines, a running top-k.

numpy only. Each function keeps the dtype it is given unless it says otherwise,
so float32 stays float32 (what the files and the model give) and float64 stays
float64.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; a zero row stays zero (verify flags it)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows at unit length for scoring a file that may hold bad rows: non-finite
    values count as 0, and a zero row stays zero."""
    return l2_normalize(np.where(np.isfinite(vectors), vectors, 0).astype(np.float32, copy=False))


def row_cosines(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each row of ``a`` with the same row of ``b`` (NaN where undefined), and
    which rows it is defined for (both finite and non-zero)."""
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    valid = np.isfinite(norm_a) & np.isfinite(norm_b) & (norm_a > 0) & (norm_b > 0)
    cosines = (a * b).sum(1) / np.where(valid, norm_a * norm_b, 1)
    return np.where(valid, cosines, np.nan), valid


class RunningTopK:
    """The k highest scores of each of a fixed set of rows (queries) over a stream of score
    blocks (rows x a block of columns, the columns in stream order), with the columns' positions
    (``index``) and, fed by ``add``, their labels (``ids``). Feed one instance one way:

    * ``update(scores, offset)``: positions only, fast (a block that beats no kept score costs a
      comparison); among tied scores numpy's partition picks which stay;
    * ``add(scores, ids)``: labels too; among tied scores the earliest column stays, as a
      stable sort of every column seen would keep it.

    Until k columns have come, ``update`` keeps -inf scores at position -1 in the free places;
    ``add`` keeps only the columns seen.
    """

    def __init__(self, rows: int, k: int, dtype=np.float32):
        self.k = k
        self.scores = np.full((rows, k), -np.inf, dtype=dtype)
        self.index = np.full((rows, k), -1, dtype=np.int64)
        self.ids = np.full((rows, k), None, dtype=object)
        self.seen = 0  # columns given to ``add``

    def update(self, scores: np.ndarray, offset: int) -> None:
        """A block of scores whose first column is column ``offset`` of the stream."""
        if self.k == 0 or scores.size == 0:
            return
        floor = self.scores.min(axis=1)
        rows = np.flatnonzero((scores > floor[:, None]).any(axis=1))
        if not len(rows):
            return
        scores = scores[rows]
        if scores.shape[1] > self.k:
            candidates = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
        else:
            candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        merged_scores = np.concatenate([self.scores[rows], np.take_along_axis(scores, candidates, 1)], 1)
        merged_index = np.concatenate([self.index[rows], candidates + offset], 1)
        best = np.argpartition(-merged_scores, self.k - 1, axis=1)[:, : self.k]
        self.scores[rows] = np.take_along_axis(merged_scores, best, 1)
        self.index[rows] = np.take_along_axis(merged_index, best, 1)

    def add(self, scores: np.ndarray, ids: list[str]) -> None:
        """The next block of columns, labelled ``ids``; kept in score order, best first."""
        kept = min(self.seen, self.k)
        positions = np.broadcast_to(self.seen + np.arange(scores.shape[1]), scores.shape)
        labels = np.broadcast_to(np.array(ids, dtype=object), scores.shape)
        merged_scores = np.concatenate([self.scores[:, :kept], scores], axis=1)
        merged_index = np.concatenate([self.index[:, :kept], positions], axis=1)
        merged_ids = np.concatenate([self.ids[:, :kept], labels], axis=1)
        best = np.argsort(-merged_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(merged_scores, best, axis=1)
        self.index = np.take_along_axis(merged_index, best, axis=1)
        self.ids = np.take_along_axis(merged_ids, best, axis=1)
        self.seen += scores.shape[1]

    def ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores and positions of each row, best first."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        return np.take_along_axis(self.scores, order, 1), np.take_along_axis(self.index, order, 1)

    def rankings(self, row_names: list[str]) -> dict[str, list[str]]:
        """The labels kept for each row (fed by ``add``), best first, by the row's name."""
        return {name: list(self.ids[row]) for row, name in enumerate(row_names)}
