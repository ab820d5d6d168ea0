"""The probes file, ``results/verify/<model>.probes.parquet``: what `verify` needs from the model.

Rule ``probe`` loads each model once and writes this small file; every
``verify`` job of that model (one per precision) reads it, so verify itself
never loads a model and needs no GPU. Rows:

* ``kind = "query"``: the configured probe queries, encoded with the model's
  query prompt (the spot check);
* ``kind = "document"``: the first rows of the float32 embeddings file,
  re-encoded from the chunk text with the document prompt (``id`` and
  ``text_sha256`` name the chunk), so verify can show that this model, as
  configured, reproduces the stored vectors.

Each row has ``embedding``; when the model has an adapter,
``embedding_without_adapter`` holds the same text encoded with the adapter
disabled. The key-value metadata ``probe`` is a JSON object: model key, the
model's output dimension (after ``truncate_dim``), prompts, normalization,
adapter path and whether it was applied.

numpy and pyarrow only: the verify environment has no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedflow.embeddings_file import fixed_size_list_to_numpy
from embedflow.errors import InputError

@dataclass
class Probes:
    info: dict  # model, dim, normalize, query_prompt, document_prompt, adapter, adapter_applied
    kinds: list[str]
    ids: list[str | None]
    texts: list[str]
    text_sha256: list[str | None]
    vectors: np.ndarray  # (rows, dim) float32
    without_adapter: np.ndarray | None = field(default=None)  # (rows, dim) float32

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    def select(self, kind: str) -> np.ndarray:
        return np.asarray([k == kind for k in self.kinds], dtype=bool)


def write_probes(path: str | Path, probes: Probes) -> None:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    dim = probes.vectors.shape[1]
    vector_type = pa.list_(pa.float32(), dim)

    def vectors(values: np.ndarray) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1), type=pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, dim)

    columns = {
        "kind": pa.array(probes.kinds, type=pa.string()),
        "id": pa.array(probes.ids, type=pa.string()),
        "text": pa.array(probes.texts, type=pa.string()),
        "text_sha256": pa.array(probes.text_sha256, type=pa.string()),
        "embedding": vectors(probes.vectors),
    }
    if probes.without_adapter is not None:
        columns["embedding_without_adapter"] = vectors(probes.without_adapter)
    schema = pa.schema(
        [pa.field(name, vector_type if name.startswith("embedding") else pa.string()) for name in columns],
        metadata={b"probe": json.dumps(probes.info, sort_keys=True).encode()},
    )
    table = pa.Table.from_pydict(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def read_probes(path: str | Path) -> Probes:
    try:
        table = pq.read_table(path)
        info = json.loads(table.schema.metadata[b"probe"])
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: not a probes file ({error})") from None
    without = None
    if "embedding_without_adapter" in table.column_names:
        without = fixed_size_list_to_numpy(table.column("embedding_without_adapter")).astype(np.float32)
    return Probes(
        info=info,
        kinds=table.column("kind").to_pylist(),
        ids=table.column("id").to_pylist(),
        texts=table.column("text").to_pylist(),
        text_sha256=table.column("text_sha256").to_pylist(),
        vectors=fixed_size_list_to_numpy(table.column("embedding")).astype(np.float32),
        without_adapter=without,
    )
