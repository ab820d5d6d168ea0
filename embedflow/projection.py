"""How a variant reduces a vector: truncation, or PCA / TruncatedSVD.

``Projection`` is the one definition, used for the corpus by rule ``project``
and for queries and probes by ``encoder.Encoder``, so both sides get the same
treatment: reduce, then re-normalize. The fitted components are saved as
``.npz`` by rule ``fit_pca`` (``embedflow.fit_pca``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedflow.atomic import held_temporary, remove_stale_temporaries
from embedflow.errors import ConfigError
from embedflow.vectors import l2_normalize

@dataclass(frozen=True)
class Projection:
    """d → k dims: the first k (``components`` None) or onto k components, then unit length."""

    dim: int
    components: np.ndarray | None = None  # (k, d) float32
    mean: np.ndarray | None = None  # (d,) float32; None for truncation and TruncatedSVD
    explained_variance_ratio: np.ndarray | None = None

    @classmethod
    def truncation(cls, dim: int) -> Projection:
        return cls(dim=dim)

    def check_input(self, input_dim: int, where: str) -> None:
        expected = input_dim if self.components is None else self.components.shape[1]
        if self.dim >= input_dim or expected != input_dim:
            raise ConfigError(
                f"{where}: cannot reduce {input_dim} dims to {self.dim}"
                + ("" if expected == input_dim else f" (the projection was fitted on {expected} dims)")
            )

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.components is None:
            reduced = vectors[:, : self.dim]
        else:
            centered = vectors if self.mean is None else vectors - self.mean
            reduced = centered @ self.components.T
        return l2_normalize(reduced).astype(np.float32, copy=False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        with held_temporary(path) as temporary:
            try:
                with open(temporary, "wb") as handle:  # through a handle: savez adds no suffix
                    np.savez(
                        handle,
                        components=self.components,
                        mean=self.mean if self.mean is not None else np.zeros(0, np.float32),
                        explained_variance_ratio=self.explained_variance_ratio,
                    )
                temporary.replace(path)
            finally:
                temporary.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        with np.load(path) as saved:
            components = saved["components"].astype(np.float32)
            mean = saved["mean"].astype(np.float32)
            ratio = saved["explained_variance_ratio"]
        return cls(dim=components.shape[0], components=components, mean=mean if mean.size else None,
                   explained_variance_ratio=ratio)


def for_variant(variant: dict) -> Projection:
    """The projection of a truncate_dim or pca variant (``variants.resolve``'s ``variant``)."""
    if variant["way"] == "truncate_dim":
        return Projection.truncation(variant["dim"])
    if variant["way"] == "pca":
        return Projection.load(variant["path"])
    raise ConfigError(f"variant way {variant['way']!r} is not a projection")
