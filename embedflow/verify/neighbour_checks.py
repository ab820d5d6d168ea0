"""Checks of the neighbours (pass two) and the spot check a person reads.

``self_retrieval``: a sampled row is its own nearest neighbour (rows with an
identical text excepted). ``top10_overlap`` (derived precisions): its nearest
rows are those of its float32 row. The spot check lists the probe queries'
top rows with their first words.
"""

from __future__ import annotations

import json

import numpy as np

from embedflow.chunks import file_positions, find_texts, is_json_lines, iter_chunks
from embedflow.probes_file import Probes
from embedflow.text_files import bom_length
from embedflow.verify.fingerprints import ChunkSelection, ids_at_positions
from embedflow.verify.passes import Neighbours
from embedflow.verify.report import Report, at_least

FIRST_WORDS = 12


def neighbour_checks(report: Report, n: Neighbours, derived: bool, reference_aligned: bool) -> None:
    add = report.checks.append
    sample = len(n.self_scores)
    if sample:
        found = n.found_themselves()
        rate = float(found.mean())
        add(at_least("self_retrieval", rate, "self_retrieval",
                     f"{int(found.sum())} of {sample} sampled rows have themselves as nearest neighbour "
                     "(rows with an identical text excepted)"))
    if derived:
        if n.own is None or n.reference is None or not reference_aligned:
            report.not_run.append({"name": "top10_overlap", "reason": "rows do not line up with the float32 file"
                                   if not reference_aligned else "fewer than 2 rows"})
            return
        own, ref = n.own.index, n.reference.index
        overlap = np.array([len(set(a) & set(b)) for a, b in zip(own.tolist(), ref.tolist())]) / n.k
        add(at_least("top10_overlap", float(overlap.mean()), "drift.top10_overlap",
                     f"share of each sampled row's {n.k} nearest neighbours (itself excluded) that are also its "
                     f"float32 neighbours; mean over {sample} rows, lowest {overlap.min():.2f}"))


def texts_at_positions(path, text_field: str, positions) -> dict[int, str]:
    """Texts of the chunks at a few positions of the chunks file. JSON Lines: only those lines
    are parsed (blank lines do not count, as in ``chunks.iter_chunks``)."""
    wanted = set(positions)
    found: dict[int, str] = {}
    if not wanted:
        return found
    if not is_json_lines(path):
        return {chunk.position: chunk.text for chunk in iter_chunks(path, text_field, wanted)}
    position, last = 0, max(wanted)
    with open(path, "rb") as handle:
        handle.seek(bom_length(path))
        for raw in handle:
            # Blank as chunks.iter_chunks counts it; a line that is not UTF-8 (rejected) is not.
            if not raw.decode("utf-8", errors="replace").strip():
                continue
            if position in wanted:
                found[position] = json.loads(raw.decode("utf-8"))[text_field]
            position += 1
            if position > last:
                break
    return found


def spot_check(parquet_path, selection: ChunkSelection, probe: Probes, n: Neighbours, precision: str,
               in_order: bool) -> dict:
    """The probe queries' top rows (``in_order``: the file's rows are the selected chunks in order)."""
    scores, index = n.queries_own.ranked()
    reference_hits = None
    if n.queries_reference is not None:
        reference_hits = [set(row) for row in n.queries_reference.ranked()[1].tolist()]
    ids = ids_at_positions(parquet_path, index.ravel())
    texts = _texts_of_rows(selection, ids, in_order)
    queries = [text for text, kind in zip(probe.texts, probe.kinds) if kind == "query"]
    result = []
    for q, query in enumerate(queries[: len(scores)]):
        hits = []
        for rank, (score, position) in enumerate(zip(scores[q], index[q]), start=1):
            if position < 0:
                continue
            chunk_id = ids.get(int(position))
            hit = {
                "rank": rank,
                "id": chunk_id,
                "score": float(score),
                "first_words": first_words(texts.get(chunk_id, "")),
            }
            if reference_hits is not None:
                hit["in_float32_top"] = int(position) in reference_hits[q]
            hits.append(hit)
        result.append({"query": query, "hits": hits})
    agreement = None
    if reference_hits is not None and len(scores):
        agreement = float(np.mean([
            len(set(index[q].tolist()) & reference_hits[q]) / max(len(reference_hits[q]), 1)
            for q in range(len(scores))
        ]))
    sample = len(n.self_scores)
    found = n.found_themselves()
    return {
        "query_prompt": probe.info.get("query_prompt"),
        "scoring": {
            "int8": "cosine of the float32 query with the dequantized rows",
            "binary": "cosine of the float32 query with the rows unpacked to +-1",
        }.get(precision, "cosine of the float32 query with the rows"),
        "k": n.queries_own.k,
        "queries": result,
        "agreement_with_float32": agreement,
        "self_retrieval": {"sample_rows": sample, "rate": float(found.mean()) if sample else None},
    }


def _texts_of_rows(selection: ChunkSelection, ids: dict[int, str], in_order: bool) -> dict[str, str]:
    """Texts by id of the rows ``ids`` (position: id)."""
    if not in_order:
        return find_texts(selection.path, selection.text_field, set(ids.values()), selection.skip)
    # rows in the order of the chunks: read just those chunks (the file's positions, past
    # any chunk rule preflight rejected)
    positions, skip = selection.positions, selection.skip
    if positions is not None:
        chunk_position = lambda row: positions[row]  # noqa: E731
    else:
        chunk_position = lambda row: file_positions([row], skip)[0] if skip else row  # noqa: E731
    at = texts_at_positions(selection.path, selection.text_field, [chunk_position(int(row)) for row in ids])
    return {ids[row]: at.get(chunk_position(int(row)), "") for row in ids}


def first_words(text: str, count: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")
