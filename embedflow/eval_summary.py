"""Rule ``eval_summary``: one table and three plots across every model × precision.

The plots show quality against bytes per vector, latency and dimension.

Quality is nDCG@10 of the exact (in-memory) ranking, so that the precision's
own loss is separated from the index's; the pgvector columns add what the
index costs on top (ANN recall, latency, bytes in the table and the index).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from embedflow.atomic import write_text
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)

COLUMNS = (
    ("model", "model"), ("precision", "precision"), ("dim", "dim"), ("way", "reduced by"),
    ("recall@1", "exact recall@1"), ("recall@5", "exact recall@5"), ("recall@10", "exact recall@10"),
    ("mrr@10", "exact MRR@10"), ("ndcg@10", "exact nDCG@10"),
    ("rescored_ndcg@10", "binary re-scored nDCG@10"),
    ("sql_ndcg@10", "pgvector nDCG@10"), ("ann_recall@10", "ANN recall@10"),
    ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
    ("parquet_bytes", "Parquet B/vector"), ("table_bytes", "table B/vector"), ("index_bytes", "index B/vector"),
)


# How a model key got its dimension (embedflow.variants), as the summary names it.
WAY_NAMES = {None: "native", "truncate_dim": "Matryoshka truncation", "pca": "PCA", "projection_head": "projection head"}


def row_of(report: dict, variants: dict | None = None) -> dict:
    variant = (variants or {}).get(report["model"])
    row = {"model": report["model"], "precision": report["precision"], "dim": report["dim"],
           "way": WAY_NAMES[variant["way"] if variant else None], "base": variant["base"] if variant else None}
    row.update({name: report["exact"][name] for name in ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")})
    row["rescored_ndcg@10"] = report.get("exact_rescored", {}).get("ndcg@10")
    sql = report.get("pgvector")
    row["sql_ndcg@10"] = sql["metrics"]["ndcg@10"] if sql else None
    row["ann_recall@10"] = sql["ann_recall@10"] if sql else None
    row["p50_ms"] = sql["latency"]["p50_ms"] if sql else None
    row["p95_ms"] = sql["latency"]["p95_ms"] if sql else None
    row["parquet_bytes"] = report["parquet_bytes_per_vector"]
    row["table_bytes"] = sql["table_bytes_per_vector"] if sql else None
    row["index_bytes"] = sql["index_bytes_per_vector"] if sql else None
    return row


def best_per_byte(rows: list[dict]) -> tuple[dict, dict]:
    """The most nDCG@10 per stored byte, and the smallest file within 1% of the best quality."""
    per_byte = max(rows, key=lambda r: r["ndcg@10"] / r["parquet_bytes"])
    best = max(r["ndcg@10"] for r in rows)
    smallest_good = min((r for r in rows if r["ndcg@10"] >= 0.99 * best), key=lambda r: r["parquet_bytes"])
    return per_byte, smallest_good


def _cell(key: str, value) -> str:
    if value is None:
        return "–"
    if key.endswith("_bytes"):
        return f"{value:,.0f}"
    if key.endswith("_ms"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def corpus_line(corpus: dict | None) -> list[str]:
    """How many chunks the corpus gave and how many rule preflight rejected (on_bad_chunk: skip)."""
    if not corpus:
        return []
    line = f"Corpus {corpus['path']}: {corpus['accepted']} chunks embedded and searched"
    if corpus["rejected"]:
        line += (f"; {corpus['rejected']} rejected (on_bad_chunk: {corpus['on_bad_chunk']}) and left out, "
                 f"listed in {corpus['rejected_file']}")
    return [line + ".", ""]


def markdown(rows: list[dict], queries: int, corpus: dict | None = None) -> str:
    per_byte, smallest_good = best_per_byte(rows)
    lines = [
        "# Retrieval evaluation",
        "",
        *corpus_line(corpus),
        f"{queries} queries; exact = in-memory ranking of the stored vectors, pgvector = the index at its "
        "configured search settings. Bytes per vector: Parquet file, table (heap + TOAST), index.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(key, row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    lines += [
        "",
        f"**Best quality per byte:** {per_byte['model']} {per_byte['precision']} "
        f"(nDCG@10 {per_byte['ndcg@10']:.3f} at {per_byte['parquet_bytes']:.0f} B/vector).",
        f"**Smallest within 1% of the best nDCG@10:** {smallest_good['model']} {smallest_good['precision']} "
        f"(nDCG@10 {smallest_good['ndcg@10']:.3f} at {smallest_good['parquet_bytes']:.0f} B/vector).",
        "**Which configuration to serve** (pgvector type, index and search setting within the budgets, its SQL "
        "and its cost at the target size): [decision.md](decision.md).",
        "",
    ]
    return "\n".join(lines + dimension_markdown(rows))


def by_dimension(rows: list[dict]) -> list[dict]:
    """float32 rows of every base model and its variants, with each variant's nDCG@10
    relative to its base's (what the reduction costs, apart from the precision's cost)."""
    float32 = {row["model"]: row for row in rows if row["precision"] == "float32"}
    based = sorted({row["base"] for row in float32.values() if row["base"]} & set(float32))
    table = []
    for base in based:
        family = [float32[base]] + sorted(
            (row for row in float32.values() if row["base"] == base), key=lambda r: (-r["dim"], r["way"])
        )
        for row in family:
            table.append({**row, "base_model": base,
                          "relative": row["ndcg@10"] / float32[base]["ndcg@10"] if float32[base]["ndcg@10"] else None})
    return table


def dimension_markdown(rows: list[dict]) -> list[str]:
    table = by_dimension(rows)
    if not table:
        return []
    lines = [
        "## Quality against dimension (float32)",
        "",
        "Each variant against the model it reduces: exact nDCG@10 and its share of the base's.",
        "",
        "| base | model | reduced by | dim | exact nDCG@10 | of base | exact recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['base_model']} | {row['model']} | {row['way']} | {row['dim']} | {row['ndcg@10']:.3f} | "
        f"{_cell('relative', row['relative'])} | {row['recall@10']:.3f} |"
        for row in table
    ]
    return lines + [""]


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[key for key, _ in COLUMNS] + ["base"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4.2), dpi=120)


def _save(figure, axes, path: str | Path, ylabel: str, legend: bool) -> None:
    """Grid, labels and legend, then the PNG written whole under its name."""
    import matplotlib.pyplot as plt

    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if legend:
        axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = Path(path).with_name(f".{Path(path).name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)


def plot(rows: list[dict], x_key: str, x_label: str, path: str | Path, log_x: bool = False) -> None:
    figure, axes = _axes()
    shown = [row for row in rows if row.get(x_key) is not None]
    for model in sorted({row["model"] for row in shown}):
        points = [row for row in shown if row["model"] == model]
        axes.scatter([row[x_key] for row in points], [row["ndcg@10"] for row in points], label=model)
        for row in points:
            axes.annotate(row["precision"], (row[x_key], row["ndcg@10"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    _save(figure, axes, path, "exact nDCG@10", legend=bool(shown))


def plot_dimension(rows: list[dict], path: str | Path) -> None:
    figure, axes = _axes()
    table = by_dimension(rows)
    for base in sorted({row["base_model"] for row in table}):
        family = [row for row in table if row["base_model"] == base]
        native = family[0]
        axes.scatter([native["dim"]], [native["ndcg@10"]], marker="*", s=120, color="black")
        axes.annotate(f"{base} (native)", (native["dim"], native["ndcg@10"]), textcoords="offset points",
                      xytext=(-10, 6), fontsize=8, ha="right")
        for way in sorted({row["way"] for row in family[1:]}):
            points = sorted((row for row in family[1:] if row["way"] == way), key=lambda r: r["dim"])
            points.append(native)  # each way's line ends at the full dimension
            axes.plot([r["dim"] for r in points], [r["ndcg@10"] for r in points], marker="o",
                      label=f"{base}: {way}")
    axes.set_xscale("log", base=2)
    dims = sorted({row["dim"] for row in table})
    axes.set_xticks(dims, [str(dim) for dim in dims])
    axes.minorticks_off()
    axes.set_xlabel("dimensions")
    _save(figure, axes, path, "exact nDCG@10 (float32)", legend=bool(table))


def summarize(
    reports: list[str | Path], outputs: dict, variants: dict | None = None, corpus: dict | None = None
) -> list[dict]:
    """``corpus``: rule preflight's counts (results/preflight.json), for the summary's first line."""
    loaded = [json.loads(Path(path).read_text()) for path in reports]
    rows = sorted((row_of(report, variants) for report in loaded), key=lambda r: (r["model"], -r["parquet_bytes"]))
    queries = loaded[0]["queries"] if loaded else 0
    write_text(outputs["markdown"], markdown(rows, queries, corpus))
    write_text(outputs["csv"], to_csv(rows))
    plot(rows, "parquet_bytes", "bytes per vector (Parquet)", outputs["quality_vs_bytes"], log_x=True)
    plot(rows, "p50_ms", "p50 query latency through pgvector (ms)", outputs["quality_vs_latency"])
    plot_dimension(rows, outputs["quality_vs_dim"])
    return rows


def main(snakemake) -> None:
    timer = Timer()
    names = ("markdown", "csv", "quality_vs_bytes", "quality_vs_latency", "quality_vs_dim")
    outputs = {name: snakemake.output[name] for name in names}
    variants = params_json(snakemake, "variants")
    corpus = json.loads(Path(snakemake.input.preflight).read_text())["corpus"]
    rows = summarize(list(snakemake.input.reports), outputs, variants, corpus)
    for output in outputs.values():
        write_provenance(output, rule=snakemake.rule, wildcards={}, config={"variants": variants},
                         inputs=[*snakemake.input.reports, snakemake.input.preflight], timing=timer.record(len(rows)),
                         extra={"corpus": corpus})


def run(snakemake) -> None:
    run_rule(snakemake, main)
