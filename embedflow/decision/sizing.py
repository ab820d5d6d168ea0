"""Extrapolations to the target size: storage, index build memory, RAM to keep an index resident.

Every figure here is an extrapolation, not a measurement: bytes per row
measured on the loaded table, times the target rows, or pgvector's own
allocation rules with the measured size of the indexed value. Each comes with
its formula, numbers filled in, so the report says how it was made.

pgvector's rules (0.8, read from its source):

* HNSW build (``src/hnswbuild.c``, ``src/hnswutils.c``): the graph is built in
  memory while ``memoryUsed < maintenance_work_mem``; after that pgvector
  says "hnsw graph no longer fits into maintenance_work_mem" and inserts the
  rest one by one on disk, much slower. Per element it allocates the element
  (``sizeof(HnswElementData)`` = 128 B), an array of L + 1 neighbour-list
  pointers, a neighbour array of 2m candidates (16 B each, 8 B header) on
  layer 0 and of m on each of its L upper layers, and the indexed value.
  L is drawn with P(L ≥ l) = m^-l, so E[L] = 1 / (m − 1). A serial build
  allocates from a memory context that adds an 8 B header to each chunk
  (a parallel one from shared memory, without it: slightly less).
* IVFFlat build (``src/ivfbuild.c``, ``src/ivfkmeans.c``): k-means over
  S = min(max(50 × lists, 10,000), rows) sampled rows holds the samples, two
  sets of centres and Elkan's bounds (4 × S × lists bytes for the lower
  bounds); above ``maintenance_work_mem`` the build fails with "memory
  required is … MB".

Both hold the indexed value detoasted, so its size is the type's
(``datum_bytes``); the sweep's measured ``pg_column_size`` of the stored
value is shown beside it (a compressed value in the table is smaller).
"""

from __future__ import annotations

import math

GIB = 2**30
HNSW_ELEMENT = 128  # sizeof(HnswElementData), 64-bit
CHUNK_HEADER = 8  # per allocation in the serial build's memory context
VECTOR_ARRAY_HEADER = 32  # sizeof(VectorArrayData)
IVFFLAT_SAMPLES_PER_LIST = 50
IVFFLAT_MIN_SAMPLES = 10_000


def maxalign(size: float) -> int:
    return int(math.ceil(size / 8) * 8)


def gib(size: float) -> str:
    return f"{size / GIB:,.2f} GiB"


def linear(target_rows: int, bytes_per_row: float, what: str) -> dict:
    """A size that grows with the rows: measured bytes per row × target rows."""
    total = bytes_per_row * target_rows
    return {"bytes": int(total), "formula": f"{what}: {bytes_per_row:,.1f} B/row (measured) × {target_rows:,} rows "
                                             f"= {gib(total)}"}


def datum_bytes(index_type: str, dim: int) -> int:
    """Bytes of one indexed value as the build holds it, detoasted: pgvector's VECTOR_SIZE, HALFVEC_SIZE,
    and PostgreSQL's VARBITTOTALLEN (a 4 B varlena header, then 4 B of dims for vector and halfvec
    and 4 B of bit length for bit)."""
    per_value = {"vector": 4 * dim, "halfvec": 2 * dim, "bit": math.ceil(dim / 8)}[index_type]
    return 8 + per_value


def hnsw_element_bytes(m: int, value_bytes: float) -> float:
    """Expected bytes of one element of pgvector's in-memory HNSW graph."""
    upper_layers = 1 / (m - 1)
    element = HNSW_ELEMENT + CHUNK_HEADER
    pointers = 8 * (1 + upper_layers) + CHUNK_HEADER  # L + 1 pointers of 8 B
    layer_zero = 8 + 16 * 2 * m + CHUNK_HEADER
    upper = upper_layers * (8 + 16 * m + CHUNK_HEADER)
    value = maxalign(value_bytes) + CHUNK_HEADER
    return element + pointers + layer_zero + upper + value


def hnsw_build_memory(target_rows: int, m: int, value_bytes: int, measured: float | None = None) -> dict:
    per_element = hnsw_element_bytes(m, value_bytes)
    total = per_element * target_rows
    formula = (
        f"HNSW build memory (pgvector's in-memory graph): rows × (176 + 32·m + (16·m + 24)/(m − 1) + MAXALIGN(v)) "
        f"= {target_rows:,} × (176 + 32·{m} + {16 * m + 24}/{m - 1} + {maxalign(value_bytes)}) "
        f"= {target_rows:,} × {per_element:,.1f} B = {gib(total)}; v = {value_bytes:,} B, the indexed value"
        + (f" ({measured:,.0f} B measured as stored)" if measured is not None else "")
    )
    return {"bytes": int(total), "per_element": per_element, "formula": formula}


def ivfflat_lists(setting: int | str, rows: int) -> int:
    from embedflow.index import auto_lists

    return auto_lists(rows) if setting == "auto" else int(setting)


def ivfflat_build_memory(target_rows: int, lists: int, dim: int, value_bytes: int) -> dict:
    samples = min(max(IVFFLAT_SAMPLES_PER_LIST * lists, IVFFLAT_MIN_SAMPLES), target_rows)
    item = maxalign(value_bytes)
    arrays = 2 * (VECTOR_ARRAY_HEADER + lists * item) + VECTOR_ARRAY_HEADER + samples * item
    kmeans = 4 * lists * dim + 4 * samples * lists + 4 * lists**2 + 8 * samples + 12 * lists
    total = arrays + kmeans
    formula = (
        "IVFFlat build memory (pgvector's k-means): 2·(32 + lists·v) + 32 + S·v + 4·lists·d + 4·S·lists + 4·lists² "
        f"+ 8·S + 12·lists, S = min(max(50·lists, 10,000), rows) = {samples:,}, lists = {lists:,}, d = {dim}, "
        f"v = {item} B (the indexed value, MAXALIGNed) = {gib(total)}"
    )
    return {"bytes": int(total), "formula": formula}


def build_memory(index: dict, target_rows: int) -> dict:
    """The build memory of one swept index (an entry of a sweep report) at ``target_rows``."""
    settings = index["settings"]
    value = datum_bytes(index["index_type"], index["dim"])
    if settings["method"] == "hnsw":
        return hnsw_build_memory(target_rows, settings["m"], value, index["indexed_value_bytes"])
    lists = ivfflat_lists(settings["lists"], target_rows)
    return {**ivfflat_build_memory(target_rows, lists, index["dim"], value), "lists": lists}


def maintenance_work_mem(size: int) -> str:
    """A maintenance_work_mem setting that holds ``size`` bytes (PostgreSQL's MB and GB are 2^20 and 2^30)."""
    if size <= 1024 * 2**20:
        return f"{max(64, math.ceil(size / 2**20 / 64) * 64)}MB"
    return f"{math.ceil(size / GIB)}GB"


def extrapolate(table: dict, index: dict, target_rows: int) -> dict:
    """Storage, build memory and resident RAM at ``target_rows`` for one swept index of one table."""
    rows = table["rows"]
    per_row = {name: table[name] / rows for name in ("table_bytes", "primary_key_bytes")}
    per_row["index_bytes"] = index["index_bytes"] / rows
    storage = linear(target_rows, sum(per_row.values()),
                     "storage (table + primary key + vector index, "
                     f"{per_row['table_bytes']:,.0f} + {per_row['primary_key_bytes']:,.0f} + "
                     f"{per_row['index_bytes']:,.0f} B/row)")
    resident = linear(target_rows, per_row["index_bytes"], "RAM to keep the vector index resident (its size)")
    if index["binary_quantize"]:
        resident["formula"] += (f"; re-ranking also reads {index['settings']['rerank_candidates']} rows' full "
                                "vectors from the table per query")
    memory = build_memory(index, target_rows)
    memory["setting"] = maintenance_work_mem(memory["bytes"])
    return {"target_rows": target_rows, "bytes_per_row": per_row, "storage": storage, "resident_ram": resident,
            "build_memory": memory}
