"""Stage ``fit_pca``: the PCA (or TruncatedSVD) a ``pca`` variant projects with.

Samples rows of the base's float32 file (seeded), fits with numpy's SVD and
saves mean, components and explained variance as ``.npz``
(``projection.Projection.save``). Component signs are fixed (largest absolute
loading positive, as scikit-learn's ``svd_flip``), so the same sample gives
the same file on any BLAS.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedflow.embeddings_file import iter_batches, read_metadata, row_count
from embedflow.errors import ConfigError, InputError
from embedflow.projection import Projection
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)


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


def _main(snakemake) -> None:
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


def run(snakemake) -> None:
    """Rule ``fit_pca``."""
    run_rule(snakemake, _main)
