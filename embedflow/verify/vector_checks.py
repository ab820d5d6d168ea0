"""Checks of the vectors themselves: finite, not zero, unit length when normalized; and the
layout findings made while streaming (bfloat16 exactness, binary padding bits)."""

from __future__ import annotations

from embedflow.embeddings_file import EmbeddingsMetadata
from embedflow.precision import get_precision
from embedflow.verify.file_checks import layout_problem
from embedflow.verify.fingerprints import examples, ids_at_positions
from embedflow.verify.passes import Figures
from embedflow.verify.report import Report, VerifySettings, at_most, none_of


def vector_checks(report: Report, settings: VerifySettings, meta: EmbeddingsMetadata, acc: Figures) -> None:
    add = report.checks.append
    names = ids_at_positions(report.file, acc.nonfinite + acc.zero + [acc.norm_worst])
    add(none_of("finite", acc.nonfinite_count, unit="rows with NaN or inf", detail=
                f"rows with NaN or inf: {examples(acc.nonfinite, names)}" if acc.nonfinite_count
                else "every value finite"))
    zero_kind = {"int8": "every value within one bucket of 0", "binary": "no bit set"}.get(settings.precision, "all 0")
    add(none_of("zero_vectors", acc.zero_count, unit="zero rows", detail=
                f"rows with {zero_kind}: {examples(acc.zero, names)}" if acc.zero_count
                else f"no row with {zero_kind}"))
    precision = get_precision(settings.precision)
    if precision.is_float and meta.normalized:
        detail = f"largest |L2 norm - 1| over {acc.norm_checked} rows (finite, non-zero)"
        if acc.norm_worst is not None:
            detail += f", at {examples([acc.norm_worst], names)}"
        add(at_most("norms", acc.norm_max_deviation, "norm_tolerance", detail))
    if settings.precision == "bfloat16" and acc.bf16_inexact:
        layout_problem(report, f"{acc.bf16_inexact} value(s) not exactly representable in bfloat16")
    if settings.precision == "binary" and acc.padding_bits:
        layout_problem(report, f"{acc.padding_bits} row(s) with bits set past dim {meta.dim}")
