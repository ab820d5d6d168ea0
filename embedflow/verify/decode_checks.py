"""Checks of a derived precision against the float32 file it was made from: decode
(int8 within half a bucket, binary signs) and drift (cosine with the float32 row)."""

from __future__ import annotations

import math

from embedflow.verify.fingerprints import examples, ids_at_positions
from embedflow.verify.passes import Figures
from embedflow.verify.report import Report, VerifySettings, at_least


def decode_checks(report: Report, settings: VerifySettings, acc: Figures, rows: int) -> None:
    add = report.checks.append
    compared = f"{acc.ref_compared} of {rows} rows compared with the float32 file by id"
    if acc.ref_misaligned:
        compared += f" ({acc.ref_misaligned} rows not aligned with it)"
    if acc.ref_compared == 0:
        report.not_run.append({"name": "decode and drift", "reason": "no row lines up with the float32 file"})
        return
    mean = acc.cos_sum / max(acc.ref_compared - acc.cos_excluded, 1)
    names = ids_at_positions(report.file, [acc.cos_min_position])
    if settings.precision == "int8":
        within = acc.values_agree / max(acc.values_compared, 1)
        add(at_least("int8_decode", within, "int8_decode.within_bucket",
                     f"share of dequantized values within half a bucket of the float32 value "
                     f"(largest error {acc.int8_max_error_buckets:.2f} buckets); {compared}"))
    elif settings.precision == "binary":
        agreement = acc.values_agree / max(acc.values_compared, 1)
        add(at_least("binary_decode", agreement, "binary_decode.sign_agreement",
                     f"share of bits equal to (float32 value > 0); {compared}"))
    scoring = {"int8": "dequantized", "binary": "unpacked to +-1"}.get(settings.precision, "as float32")
    add(at_least("drift_mean_cosine", mean, "drift.mean_cosine",
                 f"cosine of each row ({scoring}) with its float32 row; {compared}"
                 + (f"; {acc.cos_excluded} zero or non-finite rows left out" if acc.cos_excluded else "")))
    if math.isfinite(acc.cos_min):
        add(at_least("drift_min_cosine", acc.cos_min, "drift.min_cosine",
                     f"lowest at {examples([acc.cos_min_position], names)}"))
