"""Checks of ids and texts: the file's rows are the selected chunks, once each, in order,
embedded from the chunk's current text; the chunks file is the one embed read."""

from __future__ import annotations

import numpy as np

from embedflow.chunks import CorpusSummary
from embedflow.embeddings_file import EmbeddingsMetadata
from embedflow.verify.fingerprints import (
    EXAMPLES,
    ChunkSelection,
    Fingerprints,
    chunk_names,
    examples,
    fingerprint_names,
    ids_at_positions,
)
from embedflow.verify.report import Check, Report, equals, none_of


def id_checks(report: Report, selection: ChunkSelection, found: Fingerprints, embed_record: dict) -> None:
    """row_count, ids_unique, ids_match, ids_order; ``report.file`` is the embeddings file."""
    add = report.checks.append
    expected = selection.expected
    rows, wanted = len(found.ids), len(expected.ids)
    embedded = embed_record.get("corpus", {}).get("embedded")
    detail = f"{wanted} chunks selected from the chunks file" + (
        f"; embed recorded {embedded}" if embedded is not None and embedded != wanted else ""
    )
    add(equals("row_count", rows, wanted, detail))
    add(_unique_check(report.file, found))
    add(_match_check(report.file, selection, found))
    add(_order_check(report.file, found, expected))


def _unique_check(parquet_path, found: Fingerprints) -> Check:
    unique, counts = np.unique(found.ids, return_counts=True)
    duplicated = unique[counts > 1]
    extra_rows = int((counts[counts > 1] - 1).sum())
    names = fingerprint_names(parquet_path, {int(x) for x in duplicated[:EXAMPLES]}) if len(duplicated) else {}
    return none_of("ids_unique", extra_rows, unit="repeated rows", detail=(
        "duplicated: " + ", ".join(repr(name) for _, name in names.values())) if extra_rows else "every id once")


def _match_check(parquet_path, selection: ChunkSelection, found: Fingerprints) -> Check:
    missing = np.setdiff1d(selection.expected.ids, found.ids)
    extra = np.setdiff1d(found.ids, selection.expected.ids)
    findings = []
    if len(missing):
        names = chunk_names(selection.path, selection.text_field, selection.positions,
                            {int(x) for x in missing[:EXAMPLES]}, selection.skip)
        findings.append(f"{len(missing)} chunk id(s) missing from the file: " + ", ".join(map(repr, names.values())))
    if len(extra):
        names = fingerprint_names(parquet_path, {int(x) for x in extra[:EXAMPLES]})
        findings.append(f"{len(extra)} id(s) not in the chunks: " + ", ".join(repr(n) for _, n in names.values()))
    return none_of("ids_match", len(missing) + len(extra), "; ".join(findings) or "same set of ids as the chunks",
                   unit="ids missing or extra")


def _order_check(parquet_path, found: Fingerprints, expected: Fingerprints) -> Check:
    rows, wanted = len(found.ids), len(expected.ids)
    common = min(rows, wanted)
    moved = np.flatnonzero(found.ids[:common] != expected.ids[:common])
    out_of_place = int(len(moved) + abs(rows - wanted))
    if out_of_place:
        first = int(moved[0]) if len(moved) else common
        at = ids_at_positions(parquet_path, [first])
        detail = (f"{out_of_place} row(s) not at the position of their chunk; first at row {first} "
                  f"(id {at.get(first, '(none)')!r})")
    else:
        detail = "rows in the order of the chunks file"
    return none_of("ids_order", out_of_place, detail, unit="rows out of place")


def chunks_sha256_check(corpus: CorpusSummary, embed_record: dict, meta: EmbeddingsMetadata | None) -> Check:
    """The chunks file is the one embed read (its sha256 as embed recorded it)."""
    recorded = embed_record.get("corpus", {}).get("sha256")
    detail = f"{corpus.path}: sha256 {corpus.sha256[:12]}…; embed provenance: {str(recorded)[:12]}…"
    if meta is not None and meta.corpus_sha256 != corpus.sha256:
        detail += f"; file metadata: {meta.corpus_sha256[:12]}…"
    ok = recorded == corpus.sha256
    return equals(
        "chunks_sha256", corpus.sha256, recorded,
        detail if ok else detail + " (the chunks file changed after embedding)",
    )


def text_hash_check(parquet_path, found: Fingerprints, expected: Fingerprints) -> Check:
    order = np.argsort(expected.ids, kind="stable")
    sorted_ids = expected.ids[order]
    where = np.searchsorted(sorted_ids, found.ids)
    where = np.minimum(where, max(len(sorted_ids) - 1, 0))
    known = (sorted_ids[where] == found.ids) if len(sorted_ids) else np.zeros(len(found.ids), bool)
    differs = known & (expected.texts[order][where] != found.texts) if len(sorted_ids) else known
    count = int(differs.sum())
    detail = f"{int(known.sum())} rows compared by id with the current chunk text"
    if count:
        rows = np.flatnonzero(differs)[:EXAMPLES]
        names = ids_at_positions(parquet_path, rows)
        detail = (f"{count} row(s) embedded a text that is not the chunk's current text: "
                  + examples([int(r) for r in rows], names) + "; re-run embed")
    return none_of("text_hashes", count, detail, unit="rows with another text")
