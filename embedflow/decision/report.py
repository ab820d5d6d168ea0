"""Rule ``decision``: ``results/eval/decision.md`` and ``.json``, and the Pareto plot.

Reads every sweep report (what was measured through SQL) and every
evaluation report (the exact in-memory figures beside them, and the int8
files pgvector cannot serve), judges the candidates
(``embedflow.decision.choose``) and writes the report: the recommendation
and why, with the SQL to paste, or what failed which budget; the noise; the
Pareto fronts; every candidate with its extrapolations and their formulas.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from embedflow.atomic import write_json, write_text
from embedflow.decision.candidates import serving_sql
from embedflow.decision.choose import RULE, decide
from embedflow.decision.sizing import GIB, gib
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule

log = logging.getLogger(__name__)


CHECK_NAMES = {"index": "not through the index", "exhaustive": "searches every list"}


def _fails(row: dict) -> str:
    if not row["fails"]:
        return "fits"
    return ", ".join(CHECK_NAMES.get(f["check"], f["check"]) for f in row["fails"])


def _interval(row: dict) -> str:
    vs = row["vs_best"]
    mark = " ≈" if vs["indistinguishable"] else ""
    return f"{vs['difference']:+.3f} [{vs['low']:+.3f}, {vs['high']:+.3f}]{mark}"


def _ms(value: float) -> str:
    return f"{value:.2f}"


def recommendation_lines(decision: dict, settings: dict) -> list[str]:
    chosen, best, budget = decision["recommended"], decision["best"], settings["budget"]
    target = settings["target_rows"]
    lines = ["## Recommendation", "", f"Rule: {RULE}", "",
             f"Budgets: storage at {target:,} rows ≤ {budget['max_storage_gib']:g} GiB; p95 ≤ "
             f"{budget['max_p95_ms']:g} ms; nDCG@10 ≥ {budget['min_ndcg_share']:g} × the best "
             f"({best['ndcg@10']:.3f}, {best['id']}).", ""]
    if chosen is None:
        return lines + decision["failure"] + [""]
    sizes = chosen["extrapolation"]
    vs = chosen["vs_best"]
    lines += [
        f"**Serve `{chosen['id']}`**: {chosen['index']}, {chosen['setting_label']}.", "",
        f"- Why: it meets every budget, and of the {sum(not r['fails'] for r in decision['rows'])} that do it "
        f"needs the least storage at {target:,} rows.",
        f"- Quality: nDCG@10 {chosen['ndcg@10']:.3f} through the index ({chosen['share_of_best']:.1%} of the best); "
        f"exact in memory {chosen['exact_ndcg@10']:.3f}; recall@10 {chosen['recall@10']:.3f}; ANN recall@10 against "
        f"exact search {chosen['ann_recall@10']:.3f}. Difference to the best {_interval(chosen).replace(' ≈', '')} "
        f"(95 % paired bootstrap over {vs['queries']} queries): "
        + ("indistinguishable from the best." if vs["indistinguishable"] else "distinguishably below the best."),
        f"- Latency (measured on {chosen['rows']:,} rows, not extrapolated): p50 {_ms(chosen['p50_ms'])} ms, "
        f"p95 {_ms(chosen['p95_ms'])} ms.",
        *([f"- Caution: measured on {chosen['rows']:,} rows. Search settings that tie here (ANN recall@10 "
           f"{chosen['ann_recall@10']:.3f}) need not tie at {target:,} rows, where a larger ef_search or more "
           "probes buy recall: measure them again on a sample of the real size before serving."]
          if chosen["rows"] < target else []),
        f"- Extrapolated to {target:,} rows: {sizes['storage']['formula']}; {sizes['build_memory']['formula']}; "
        f"{sizes['resident_ram']['formula']}.",
        f"- Noise: {sum(r['vs_best']['indistinguishable'] for r in decision['rows'])} of {len(decision['rows'])} "
        "configurations are indistinguishable from the best (their 95 % interval holds 0; ≈ in the table below).",
        "", "The SQL (the statements the sweep ran; `pg_get_indexdef` of the index it built: "
        f"`{chosen['_index']['definition']}`):", "", "```sql",
        recommended_sql(chosen, target), "```", "",
    ]
    return lines


def recommended_sql(chosen: dict, target_rows: int) -> str:
    sizes, index = chosen["extrapolation"], chosen["_index"]
    note = ""
    if chosen["method"] == "ivfflat":
        note = (f"measured with lists = {index['options']['lists']} on {chosen['rows']:,} rows; at {target_rows:,} rows "
                f"pgvector advises lists = {sizes['build_memory']['lists']:,} (rows/1000 up to 1M rows, sqrt(rows) "
                "beyond), which the build memory assumes")
    return serving_sql({**chosen["_sweep"], **index}, chosen["setting"], sizes["build_memory"]["setting"], note)


def binary_lines(decision: dict, settings: dict) -> list[str]:
    shares = decision["binary_rerank"]
    if not shares:
        return []
    from embedflow.decision.choose import eligible

    quantized = [r for r in decision["rows"] if r["binary_quantize"] and eligible(r)]
    best = max(quantized, key=lambda r: (r["ndcg@10"], -r["storage_bytes"])) if quantized else None
    lines = ["## binary_quantize with re-ranking", "",
             "The index on `binary_quantize(embedding)` of a float column, its candidates re-ranked on the full "
             "vector, against the plain index of the same column at the same search setting:", "",
             "| configuration | nDCG@10 | plain index | nDCG@10 | share | share of exact float |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['id']} | {s['ndcg@10']:.3f} | {s['against']} | {s['against_ndcg@10']:.3f} | {s['share']:.1%} | "
              f"{'–' if s['share_of_exact'] is None else format(s['share_of_exact'], '.1%')} |" for s in shares]
    if best:
        lines += ["", f"The re-rank form, for the best of them (`{best['id']}`):", "", "```sql",
                  recommended_sql(best, settings["target_rows"]), "```"]
    return lines + [""]


def front_lines(decision: dict) -> list[str]:
    lines = ["## Pareto fronts", "", "No other configuration has both more nDCG@10 and less cost "
             "(the plot: `decision_pareto.png`).", ""]
    for name, title, value in (("storage", "nDCG@10 against storage at the target rows",
                                lambda r: gib(r["storage_bytes"])),
                               ("p95", "nDCG@10 against p95 latency", lambda r: f"{_ms(r['p95_ms'])} ms")):
        lines.append(f"- {title}: " + "; ".join(f"`{r['id']}` ({r['ndcg@10']:.3f}, {value(r)})"
                                                for r in decision["fronts"][name]))
    return lines + [""]


def candidates_table(decision: dict) -> list[str]:
    lines = ["## Every candidate", "",
             "nDCG@10 and recall@10 through the index (real SQL, seq scans off); Δ best = mean nDCG@10 difference to "
             "the best with its 95 % paired-bootstrap interval (≈: indistinguishable); exact = in memory, from "
             "`evaluate`; B/row: table + primary key, and the vector index, measured; storage, build memory and "
             "RAM are extrapolations to the target rows (formulas below).", "",
             "| configuration | nDCG@10 | Δ best [95 %] | exact nDCG@10 | recall@10 | ANN recall@10 | p50 / p95 ms | "
             "table B/row | index B/row | build s | storage | build memory | resident RAM | budgets |",
             "|" + "---|" * 14]
    for row in sorted(decision["rows"], key=lambda r: (-r["ndcg@10"], r["storage_bytes"])):
        sizes = row["extrapolation"]
        per_row = sizes["bytes_per_row"]
        exact = "–" if row["exact_ndcg@10"] is None else f"{row['exact_ndcg@10']:.3f}"
        lines.append(
            f"| {row['id']} | {row['ndcg@10']:.3f} | {_interval(row)} | {exact} | {row['recall@10']:.3f} | "
            f"{row['ann_recall@10']:.3f} | {_ms(row['p50_ms'])} / {_ms(row['p95_ms'])} | "
            f"{per_row['table_bytes'] + per_row['primary_key_bytes']:,.0f} | {per_row['index_bytes']:,.0f} | "
            f"{row['build_seconds']:.2f} | {gib(row['storage_bytes'])} | {gib(sizes['build_memory']['bytes'])} | "
            f"{gib(sizes['resident_ram']['bytes'])} | {_fails(row)} |")
    return lines + [""]


def formula_lines(decision: dict) -> list[str]:
    lines = ["## Extrapolations, with their formulas", "",
             "Extrapolations, not measurements: measured bytes per row × target rows, and pgvector's own build "
             "allocation rules (docs/decision.md).", ""]
    seen = set()
    for row in decision["rows"]:
        key = (row["table"], row["index"])
        if key in seen:
            continue
        seen.add(key)
        sizes = row["extrapolation"]
        lines.append(f"- `{row['table']}` {row['index']}: {sizes['storage']['formula']}; "
                     f"{sizes['build_memory']['formula']} (maintenance_work_mem ≥ {sizes['build_memory']['setting']}); "
                     f"{sizes['resident_ram']['formula']}.")
    return lines + [""]


def not_served_lines(evaluations: list[dict], sweeps: list[dict]) -> list[str]:
    lines = ["## Not served", ""]
    for report in evaluations:
        if report["precision"] == "int8":
            lines.append(f"- `{report['model']}/int8`: a Parquet artifact only ({report['parquet_bytes_per_vector']:,.0f} "
                         f"B/vector, exact nDCG@10 {report['exact']['ndcg@10']:.3f}); pgvector has no int8 type.")
    lines += [f"- `{sweep['table']}`: {reason}" for sweep in sweeps for reason in sweep["left_out"]]
    return lines + [""] if len(lines) > 2 else []


def markdown(decision: dict, settings: dict, evaluations: list[dict], sweeps: list[dict]) -> str:
    rows = decision["rows"]
    head = [
        "# Which configuration to serve", "",
        f"{len(rows)} servable configurations (model × pgvector type × index × search setting) of {len(sweeps)} "
        f"tables, each measured through real SQL on a copy of the loaded table ({rows[0]['rows']:,} rows, "
        f"{rows[0]['vs_best']['queries']} queries); extrapolated to {settings['target_rows']:,} rows. "
        "Latency is measured at the table's own size, with sequential scans off so that the index answers; it "
        "is not extrapolated. The summary of every model × precision is [summary.md](summary.md).", "",
    ]
    parts = [head, recommendation_lines(decision, settings), binary_lines(decision, settings), front_lines(decision),
             candidates_table(decision), formula_lines(decision), not_served_lines(evaluations, sweeps)]
    return "\n".join(line for part in parts for line in part)


def public(row: dict) -> dict:
    return {key: value for key, value in row.items() if not key.startswith("_")}


def as_json(decision: dict, settings: dict, evaluations: list[dict], sweeps: list[dict]) -> dict:
    chosen = decision["recommended"]
    recommendation = None
    if chosen:
        recommendation = {**public(chosen), "definition": chosen["_index"]["definition"],
                          "create_table": chosen["_sweep"]["create_table"],
                          "create_index": chosen["_index"]["create_index"], "query": chosen["_index"]["query"],
                          "sql": recommended_sql(chosen, settings["target_rows"])}
    return {
        "target_rows": settings["target_rows"], "budget": settings["budget"], "rule": RULE,
        "best": decision["best"]["id"], "recommendation": recommendation, "failure": decision["failure"],
        "pareto": {name: [row["id"] for row in front] for name, front in decision["fronts"].items()},
        "binary_rerank": decision["binary_rerank"],
        "candidates": [public(row) for row in decision["rows"]],
        "parquet_only": [{"model": r["model"], "precision": r["precision"], "exact": r["exact"],
                          "parquet_bytes_per_vector": r["parquet_bytes_per_vector"]}
                         for r in evaluations if r["precision"] == "int8"],
        "left_out": {sweep["table"]: sweep["left_out"] for sweep in sweeps if sweep["left_out"]},
    }


def plot(decision: dict, settings: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedflow.decision.choose import eligible

    budget, chosen = settings["budget"], decision["recommended"]
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120, sharey=True)
    for axes, (name, key, label, scale, limit) in zip(panels, (
        ("storage", "storage_bytes", "storage at the target rows (GiB, extrapolated)", GIB, budget["max_storage_gib"]),
        ("p95", "p95_ms", "p95 latency (ms, measured)", 1, budget["max_p95_ms"]),
    )):
        for kept, marker, text in ((True, "o", "candidate"), (False, "x", "not eligible (exact scan / no index)")):
            rows = [r for r in decision["rows"] if eligible(r) == kept]
            if rows:
                axes.scatter([r[key] / scale for r in rows], [r["ndcg@10"] for r in rows], s=14, color="0.65",
                             marker=marker, label=text)
        front = decision["fronts"][name]
        axes.plot([r[key] / scale for r in front], [r["ndcg@10"] for r in front], marker="o", color="tab:blue",
                  label="Pareto front")
        for row in front:
            axes.annotate(row["id"], (row[key] / scale, row["ndcg@10"]), textcoords="offset points", xytext=(4, -8),
                          fontsize=6)
        if chosen:
            axes.scatter([chosen[key] / scale], [chosen["ndcg@10"]], marker="*", s=180, color="tab:red",
                         label="recommended", zorder=3)
        axes.axvline(limit, color="tab:red", linestyle="--", linewidth=0.8, label="budget")
        axes.axhline(budget["min_ndcg_share"] * decision["best"]["ndcg@10"], color="tab:red", linestyle="--",
                     linewidth=0.8)
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("nDCG@10 through the index")
    panels[0].legend(fontsize=7)
    figure.tight_layout()
    temporary = Path(path).with_name(f".{Path(path).name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)


def write_decision(sweep_paths, evaluation_paths, settings: dict, outputs: dict) -> dict:
    sweeps = [json.loads(Path(path).read_text()) for path in sweep_paths]
    evaluations = [json.loads(Path(path).read_text()) for path in evaluation_paths]
    exact = {(r["model"], r["precision"]): r["exact"] for r in evaluations}
    decision = decide(sweeps, exact, settings)
    write_text(outputs["markdown"], markdown(decision, settings, evaluations, sweeps))
    write_json(outputs["json"], as_json(decision, settings, evaluations, sweeps))
    plot(decision, settings, outputs["pareto"])
    chosen = decision["recommended"]
    log.info("recommended: %s", chosen["id"] if chosen else "nothing fits: " + " ".join(decision["failure"]))
    return decision


def main(snakemake) -> None:
    timer = Timer()
    settings = params_json(snakemake, "decision")
    outputs = {name: snakemake.output[name] for name in ("markdown", "json", "pareto")}
    inputs = list(snakemake.input.sweeps) + list(snakemake.input.evaluations)
    decision = write_decision(snakemake.input.sweeps, snakemake.input.evaluations, settings, outputs)
    timer.stop()
    for output in outputs.values():
        write_provenance(output, rule=snakemake.rule, wildcards={}, config={"decision": settings}, inputs=inputs,
                         timing=timer.record(len(decision["rows"]), unit="candidates"))


def run(snakemake) -> None:
    run_rule(snakemake, main)
