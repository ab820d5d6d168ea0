"""From swept measurements to a choice: candidates, noise, budgets, Pareto fronts, the recommendation.

A candidate is one index of one table at one search setting (a sweep report's
``indexes[i].searches[j]``). Its nDCG@10 is compared with the best
candidate's by a paired bootstrap over the queries (the same resampled
queries for every candidate), so that a difference the 40 queries cannot
resolve is called indistinguishable. The recommendation follows one stated
rule (``RULE``) from the budgets.
"""

from __future__ import annotations

import numpy as np

from embedflow.decision.sizing import GIB, extrapolate

RULE = (
    "Of the configurations served through their index (and, for IVFFlat, searching fewer lists than it has) "
    "that meet every budget (storage at the target rows, "
    "measured p95 latency, share of the best nDCG@10), the one with the least storage at the target rows; "
    "among equal storage (one index at several search settings) the higher nDCG@10, then the smaller search "
    "setting (less work per query), then the lower p95."
)
BUDGETS = ("storage", "p95", "quality")


def candidate_rows(sweeps: list[dict], exact: dict[tuple[str, str], dict], target_rows: int) -> list[dict]:
    """One row per (table, index, search setting), with its extrapolations and its per-query nDCG@10."""
    rows = []
    for sweep in sweeps:
        in_memory = exact.get((sweep["model"], sweep["precision"]), {})
        for index in sweep["indexes"]:
            sizes = extrapolate(sweep, index, target_rows)
            for search in index["searches"]:
                method = index["settings"]["method"] + ("+binary_quantize" if index["binary_quantize"] else "")
                rows.append({
                    "id": f"{sweep['model']}/{sweep['precision']}/{method}/{search['label']}",
                    "model": sweep["model"], "precision": sweep["precision"], "table": sweep["table"],
                    "column_type": sweep["column_type"], "index": index["label"], "method": index["settings"]["method"],
                    "binary_quantize": index["binary_quantize"], "setting": search["setting"],
                    "setting_label": search["label"], "uses_index": index["uses_index"],
                    "exhaustive": search["exhaustive"],
                    "ndcg@10": float(np.mean(search["ndcg@10"])), "recall@10": float(np.mean(search["recall@10"])),
                    "ann_recall@10": search["ann_recall@10"], "p50_ms": search["latency"]["p50_ms"],
                    "p95_ms": search["latency"]["p95_ms"], "exact_ndcg@10": in_memory.get("ndcg@10"),
                    "exact_recall@10": in_memory.get("recall@10"), "rows": sweep["rows"],
                    "build_seconds": index["build_seconds"], "build_notices": index["build_notices"],
                    "extrapolation": sizes, "storage_bytes": sizes["storage"]["bytes"],
                    "_per_query": dict(zip(sweep["queries"], search["ndcg@10"])), "_sweep": sweep, "_index": index,
                })
    return rows


def common_queries(rows: list[dict]) -> list[str]:
    queries = set.intersection(*(set(row["_per_query"]) for row in rows))
    return sorted(queries)


def paired_bootstrap(rows: list[dict], best: dict, resamples: int, seed: int) -> None:
    """Each row's mean nDCG@10 difference to ``best`` with a 95 % percentile interval (in place)."""
    queries = common_queries(rows)
    scores = np.array([[row["_per_query"][q] for q in queries] for row in rows])
    differences = scores - np.array([best["_per_query"][q] for q in queries])
    picks = np.random.default_rng(seed).integers(0, len(queries), size=(resamples, len(queries)))
    means = np.stack([differences[:, pick].mean(axis=1) for pick in picks], axis=1)  # rows × resamples
    low, high = np.percentile(means, [2.5, 97.5], axis=1)
    for row, difference, lo, hi in zip(rows, differences.mean(axis=1), low, high):
        row["vs_best"] = {"difference": float(difference), "low": float(lo), "high": float(hi),
                          "indistinguishable": bool(lo <= 0 <= hi), "queries": len(queries)}


def budget_failures(row: dict, budget: dict, best_ndcg: float) -> list[dict]:
    """Which checks ``row`` fails: the three budgets, each with its value and limit, and whether its
    measurement was of the index (``index``) and not of a search through every list (``exhaustive``)."""
    storage, share = row["storage_bytes"] / GIB, (row["ndcg@10"] / best_ndcg if best_ndcg else 0.0)
    checks = [
        ("storage", storage, budget["max_storage_gib"], storage <= budget["max_storage_gib"]),
        ("p95", row["p95_ms"], budget["max_p95_ms"], row["p95_ms"] <= budget["max_p95_ms"]),
        ("quality", share, budget["min_ndcg_share"], best_ndcg > 0 and share >= budget["min_ndcg_share"]),
        ("index", None, None, row["uses_index"]),
        ("exhaustive", None, None, not row["exhaustive"]),
    ]
    return [{"check": name, "value": value, "limit": limit} for name, value, limit, ok in checks if not ok]


def setting_value(row: dict) -> int:
    return next(iter(row["setting"].values()))


def recommend(rows: list[dict]) -> dict | None:
    fitting = [row for row in rows if not row["fails"]]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (r["storage_bytes"], -r["ndcg@10"], setting_value(r), r["p95_ms"]))


def pareto_front(rows: list[dict], cost: str) -> list[dict]:
    """Rows no other row beats on both ``cost`` (lower) and nDCG@10 (higher), by cost."""
    ordered = sorted(rows, key=lambda r: (r[cost], -r["ndcg@10"]))
    front, best = [], -np.inf
    for row in ordered:
        if row["ndcg@10"] > best:
            front.append(row)
            best = row["ndcg@10"]
    return front


def eligible(row: dict) -> bool:
    """Measured through its index, and not by a search of every list (which says nothing at the target size)."""
    return row["uses_index"] and not row["exhaustive"]


def failure_statement(rows: list[dict], budget: dict, best: dict, target_rows: int) -> list[str]:
    """What failed which budget, when nothing fits: per budget how many fail and the best value any reached."""
    lines = ["No configuration meets every budget."]
    served = [row for row in rows if eligible(row)] or rows
    if len(served) < len(rows):
        exhaustive = sum(row["exhaustive"] for row in rows)
        unindexed = sum(not row["uses_index"] for row in rows)
        lines.append(f"- {len(rows) - len(served)} of {len(rows)} are not eligible whatever the budgets ({exhaustive} "
                     f"search every IVFFlat list at this size, an exact scan; {unindexed} are not answered through "
                     f"their index). Of the {len(served)} eligible:")
    for name, title, unit in (("storage", f"storage at {target_rows:,} rows ≤ {budget['max_storage_gib']:g} GiB", "GiB"),
                              ("p95", f"p95 latency ≤ {budget['max_p95_ms']:g} ms", "ms"),
                              ("quality", f"nDCG@10 ≥ {budget['min_ndcg_share']:g} × best ({best['ndcg@10']:.3f})",
                               "of best")):
        failing = [row for row in served if any(f["check"] == name for f in row["fails"])]
        closest = min(served, key=lambda r: _budget_value(r, name, best))
        value = _budget_value(closest, name, best)
        shown = -value if name == "quality" else value
        lines.append(f"- {title}: {len(failing)} of {len(served)} fail; the best any reaches is {shown:,.3f} {unit} "
                     f"({closest['id']}).")
    single = [row for row in served if len(row["fails"]) == 1]
    if single:
        near = sorted(single, key=lambda r: r["storage_bytes"])[:5]
        lines.append("- Nearest misses (one budget each): " + "; ".join(
            f"{row['id']} misses {row['fails'][0]['check']}" for row in near) + ".")
    return lines


def _budget_value(row: dict, name: str, best: dict) -> float:
    """The row's value for a budget, oriented so that lower is better."""
    if name == "storage":
        return row["storage_bytes"] / GIB
    if name == "p95":
        return row["p95_ms"]
    return -row["ndcg@10"] / best["ndcg@10"] if best["ndcg@10"] else 0.0


def binary_rerank_shares(rows: list[dict]) -> list[dict]:
    """binary_quantize + re-rank on a float column against the plain index of that column, per setting."""
    plain = {(r["table"], r["method"], r["setting_label"]): r for r in rows if not r["binary_quantize"]}
    shares = []
    for row in rows:
        base = plain.get((row["table"], row["method"], row["setting_label"]))
        if row["binary_quantize"] and base and base["ndcg@10"]:
            shares.append({"id": row["id"], "against": base["id"], "ndcg@10": row["ndcg@10"],
                           "against_ndcg@10": base["ndcg@10"], "share": row["ndcg@10"] / base["ndcg@10"],
                           "share_of_exact": row["ndcg@10"] / base["exact_ndcg@10"] if base["exact_ndcg@10"] else None})
    return shares


def decide(sweeps: list[dict], exact: dict, settings: dict) -> dict:
    """Every candidate judged; the recommendation (or what failed which budget) and the fronts."""
    target_rows, budget = settings["target_rows"], settings["budget"]
    rows = candidate_rows(sweeps, exact, target_rows)
    if not rows:
        from embedflow.errors import UserError

        raise UserError("no servable candidate was measured: every precision is int8, or no sweep ran")
    served = [row for row in rows if eligible(row)] or rows
    best = max(served, key=lambda r: (r["ndcg@10"], -r["storage_bytes"]))
    paired_bootstrap(rows, best, settings["bootstrap"]["resamples"], settings["bootstrap"]["seed"])
    for row in rows:
        row["fails"] = budget_failures(row, budget, best["ndcg@10"])
        row["share_of_best"] = row["ndcg@10"] / best["ndcg@10"] if best["ndcg@10"] else None
    chosen = recommend(rows)
    return {
        "rows": rows, "best": best, "recommended": chosen,
        "failure": None if chosen else failure_statement(rows, budget, best, target_rows),
        "fronts": {"storage": pareto_front(served, "storage_bytes"), "p95": pareto_front(served, "p95_ms")},
        "binary_rerank": binary_rerank_shares(rows),
    }
