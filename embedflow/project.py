"""Stages ``fit_pca`` and ``project``: smaller vectors derived from a base model's float32 file.

``Projection`` is the one definition of how a variant reduces a vector
(truncation, or PCA / TruncatedSVD), used for the corpus here and for
queries and probes by ``encoder.Encoder``, so both sides get the same
treatment: reduce, then re-normalize.

``fit_pca`` samples rows of the base's float32 file (seeded), fits with
numpy's SVD and saves mean, components and explained variance as ``.npz``.
Component signs are fixed (largest absolute loading positive, as
scikit-learn's ``svd_flip``), so the same sample gives the same file on any
BLAS. ``project`` streams the base's float32 file into the variant's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedflow.atomic import remove_stale_temporaries, temporary_path
from embedflow.embeddings_file import EmbeddingsWriter, iter_batches, read_metadata, row_count
from embedflow.errors import ConfigError, InputError
from embedflow.provenance import Timer, read_provenance, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.variants import reduction_of

log = logging.getLogger(__name__)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)  # a zero vector stays zero; verify flags it


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
        temporary = temporary_path(path)  # written through a handle: savez adds no suffix
        try:
            with open(temporary, "wb") as handle:
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


# --- fit_pca ------------------------------------------------------------------------


def sample_rows(path: str | Path, rows: int, seed: int) -> np.ndarray:
    """``rows`` rows of an embeddings file picked at random (seeded), in file order; streamed."""
    total = row_count(path)
    if total <= rows:
        wanted = None
    else:
        wanted = np.sort(np.random.default_rng(seed).choice(total, size=rows, replace=False))
    picked, offset = [], 0
    for batch in iter_batches(path):
        count = len(batch.ids)
        if wanted is None:
            picked.append(batch.vectors.astype(np.float32))
        else:
            inside = wanted[(wanted >= offset) & (wanted < offset + count)] - offset
            picked.append(batch.vectors[inside].astype(np.float32))
        offset += count
    return np.vstack(picked) if picked else np.zeros((0, 0), np.float32)


def fit_pca(sample: np.ndarray, dim: int, center: bool = True) -> Projection:
    """PCA (``center``) or TruncatedSVD of the sample's rows, ``dim`` components."""
    rows, width = sample.shape
    if dim >= width:
        raise ConfigError(f"pca.dim {dim} must be below the base's {width} dims")
    if rows < dim:
        raise InputError(f"PCA to {dim} dims needs at least {dim} sample rows; the base file has {rows}")
    data = sample.astype(np.float64)
    mean = data.mean(axis=0) if center else None
    centered = data - mean if center else data
    _, singular, vt = np.linalg.svd(centered, full_matrices=False)
    # Sign convention of sklearn's svd_flip(u_based_decision=False): largest |loading| positive.
    signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    vt *= np.where(signs == 0, 1, signs)[:, None]
    # Share of the sample's (centered) sum of squares each component keeps: for PCA the
    # explained variance ratio; for TruncatedSVD the share of the squared norms.
    total = float((centered**2).sum())
    return Projection(
        dim=dim,
        components=vt[:dim].astype(np.float32),
        mean=None if mean is None else mean.astype(np.float32),
        explained_variance_ratio=(singular[:dim] ** 2 / total).astype(np.float32) if total > 0 else None,
    )


def fit_pca_main(snakemake) -> None:
    timer = Timer()
    variant = params_json(snakemake, "variant")
    source = snakemake.input.parquet
    meta = read_metadata(source)
    if meta.precision != "float32":
        raise InputError(f"{source}: holds {meta.precision} embeddings; PCA is fitted on float32")
    sample = sample_rows(source, variant["sample_rows"], variant["seed"])
    projection = fit_pca(sample, variant["dim"], variant["center"])
    projection.save(snakemake.output.projection)
    kept = float(projection.explained_variance_ratio.sum()) if projection.explained_variance_ratio is not None else None
    log.info(
        "%s of %d x %d sample rows of %s: %d components keep %.1f%% of the variance",
        "PCA" if variant["center"] else "TruncatedSVD", sample.shape[0], sample.shape[1], source,
        variant["dim"], 100 * (kept or 0),
    )
    write_provenance(
        snakemake.output.projection,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"variant": variant},
        inputs=[source],
        timing=timer.stop().record(sample.shape[0]),
        extra={"projection": {
            "method": "pca" if variant["center"] else "truncated_svd",
            "input_dim": int(sample.shape[1]),
            "dim": variant["dim"],
            "sample_rows": int(sample.shape[0]),
            "explained_variance_kept": kept,
            "explained_variance_ratio": None if projection.explained_variance_ratio is None
            else [round(float(v), 6) for v in projection.explained_variance_ratio],
        }},
    )


# --- project -------------------------------------------------------------------------


def project_file(source: str | Path, output: str | Path, model_key: str, variant: dict,
                 projection: Projection) -> int:
    """Write the variant's float32 file from the base's; returns the row count."""
    meta = read_metadata(source)
    if meta.precision != "float32":
        raise InputError(f"{source}: holds {meta.precision} embeddings; variants derive from float32")
    projection.check_input(meta.dim, f"{source} -> {output}")
    target = replace(meta, model=model_key, dim=projection.dim, normalized=True,
                     reduction=reduction_of(variant))
    with EmbeddingsWriter(output, target) as writer:
        for batch in iter_batches(source):
            writer.write(batch.ids, projection.apply(batch.vectors), batch.hashes)
    return writer.rows


def project_main(snakemake) -> None:
    timer = Timer()
    model = params_json(snakemake, "model")
    variant = model["variant"]
    projection = for_variant(variant)
    rows = project_file(snakemake.input.parquet, snakemake.output.parquet, snakemake.wildcards.model,
                        variant, projection)
    log.info("wrote %s: %d rows, %s of %s to %d dims, re-normalized", snakemake.output.parquet, rows,
             variant["way"], variant["base"], projection.dim)
    base_record = read_provenance(snakemake.input.parquet)
    write_provenance(
        snakemake.output.parquet,
        rule=snakemake.rule,
        wildcards=dict(snakemake.wildcards),
        config={"model": model},
        inputs=list(snakemake.input),
        timing=timer.stop().record(rows),
        model=base_record.get("model"),
        extra={
            "corpus": base_record.get("corpus"),
            "embedding": {"dim": projection.dim, "normalized": True},
            "variant": variant,
        },
    )


def run_fit_pca(snakemake) -> None:
    run_rule(snakemake, fit_pca_main)


def run_project(snakemake) -> None:
    run_rule(snakemake, project_main)
