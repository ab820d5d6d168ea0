"""Rule ``preflight``: the corpus, checked once before the first model job.

Every model job (embed, train_head, encode_queries, probe) waits for it:

* the chunks file is validated under ``on_bad_chunk``: ``fail`` fails this job
  at the first bad chunk; ``skip`` writes every bad chunk to
  ``results/rejected/<corpus>.jsonl`` (``embedflow.rejected``), which the
  later rules skip and count;
* the disk: the outputs still to make, estimated, against the free space of
  the file systems they go to (``estimate_outputs``).

It writes ``results/preflight.json`` with what it found, and the records index
of the accepted chunks (``embedflow.records_file``: each one's id, place in the
file and record hash), which a load reads instead of parsing every record. It reruns when the
chunks file or the text field changes, which rerun every rule that reads the
corpus anyway. What is cheap to check at every run is checked when the run
starts instead (``embedflow.onstart``): the query set, the pairs files and
the adapters that its jobs will read, the database it will reach, and that
the policy of the run agrees with what this rule rejected.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from embedflow.atomic import write_json
from embedflow.bundled import BUNDLED_PREFIX, bundled_folder
from embedflow.chunks import validate_chunks
from embedflow.errors import UserError
from embedflow.precision import get_precision
from embedflow.provenance import Timer, write_provenance
from embedflow.records_file import RecordsWriter
from embedflow.rejected import write_rejected
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.tables import column_type

log = logging.getLogger(__name__)

# A model whose dimension cannot be known before it loads (a hub model) is counted at this.
ASSUMED_DIM = 1024
ROW_OVERHEAD = 100  # bytes a Parquet row or table row adds to its vector: id, sha256, headers
VECTOR_HEADER = 8  # pgvector's varlena header and dimension count
HNSW_NEIGHBOUR_BYTES = 6  # an item pointer per neighbour, 2 * m neighbours on layer 0


@dataclass(frozen=True)
class PlannedOutputs:
    """What the disk estimate needs to know about the config (params ``plan``)."""

    # key -> {"dim": from the config or None, "source": ..., "precisions": [...], "tables": {precision: marker}}
    models: dict
    embeddings: str  # the embeddings path template
    pgdata: str | None  # the embedded server's folder; None with a DSN (the disk is elsewhere)
    index_method: str
    index_m: int


def folder_dim(folder: Path) -> int | None:
    """A sentence-transformers folder's output dimension, read from its config files."""
    modules = folder / "modules.json"
    if modules.is_file():
        for module in reversed(json.loads(modules.read_text())):
            config = folder / module.get("path", "") / "config.json"
            kind = module.get("type", "")
            if config.is_file() and kind.endswith(("Dense", "Pooling")):
                values = json.loads(config.read_text())
                dim = values.get("out_features") or values.get("word_embedding_dimension") or values.get(
                    "embedding_dimension")
                if dim:
                    return int(dim)
    config = folder / "config.json"
    if config.is_file():
        values = json.loads(config.read_text())
        return values.get("hidden_size") or values.get("d_model")
    return None


def model_dim(facts: dict) -> int | None:
    """The dimension a model's files will have, when it can be known without loading it."""
    if facts["dim"]:
        return facts["dim"]
    source = facts["source"]
    try:
        if source.startswith(BUNDLED_PREFIX):
            return folder_dim(bundled_folder(source[len(BUNDLED_PREFIX):]))
        if Path(source).expanduser().is_dir():
            return folder_dim(Path(source).expanduser())
    except (ImportError, KeyError, ValueError, OSError):
        pass
    return None  # a hub model, or a folder trained by an earlier job


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError


def vector_bytes_in_parquet(precision: str, dim: int) -> int:
    spec = get_precision(precision)
    return spec.width(dim) * spec.numpy_dtype.itemsize


def vector_bytes_in_table(precision: str, dim: int) -> int:
    kind = column_type(precision)
    return VECTOR_HEADER + (-(-dim // 8) if kind == "bit" else dim * (2 if kind == "halfvec" else 4))


def estimate_outputs(plan: PlannedOutputs, rows: int, text_bytes: int) -> dict[str, dict]:
    """Bytes still to write, by the folder they go to: the embeddings files and, with the
    embedded server, the tables (text and metadata included) with their indexes. Outputs
    that exist already are not counted."""
    folders: dict[str, dict] = {}

    def add(folder: str, size: float, what: str) -> None:
        entry = folders.setdefault(folder, {"bytes": 0, "outputs": 0, "what": set()})
        entry["bytes"] += int(size)
        entry["outputs"] += 1
        entry["what"].add(what)

    for model, facts in plan.models.items():
        dim = facts["dim"] or ASSUMED_DIM  # model_dim() already filled in what can be known
        for precision in facts["precisions"]:
            path = plan.embeddings.format(model=model, precision=precision)
            if not Path(path).exists():
                add(os.path.dirname(path), rows * (vector_bytes_in_parquet(precision, dim) + ROW_OVERHEAD),
                    "embeddings files")
                if precision == "float32":  # the shards' parts it is gathered from, which stay
                    add(os.path.join(os.path.dirname(path), "shards"),
                        rows * (vector_bytes_in_parquet(precision, dim) + ROW_OVERHEAD), "embeddings files")
        for precision, marker in facts["tables"].items():
            if plan.pgdata is None or Path(marker).exists():
                continue
            vector = vector_bytes_in_table(precision, dim)
            table = rows * (vector + ROW_OVERHEAD) + text_bytes
            index = {"hnsw": rows * (vector + 2 * plan.index_m * HNSW_NEIGHBOUR_BYTES), "ivfflat": rows * vector}
            add(plan.pgdata, table + index.get(plan.index_method, 0), "tables with their indexes")
    return folders


def _existing(path: str) -> Path:
    """The nearest folder of ``path`` that exists (where its file system's free space is read)."""
    folder = Path(path).resolve()
    while not folder.exists():
        folder = folder.parent
    return folder


def check_disk(needed: dict[str, dict], assumed: list[str]) -> list[dict]:
    """Needed bytes summed per file system, against its free space; raises when short."""
    by_device: dict[int, dict] = {}
    for folder, entry in needed.items():
        existing = _existing(folder)
        device = by_device.setdefault(existing.stat().st_dev, {
            "folders": [], "needed_bytes": 0, "free_bytes": shutil.disk_usage(existing).free, "what": set()})
        device["folders"].append(folder)
        device["needed_bytes"] += entry["bytes"]
        device["what"] |= entry["what"]
    report = []
    for device in by_device.values():
        entry = {**device, "what": sorted(device["what"])}
        report.append(entry)
        if device["needed_bytes"] > device["free_bytes"]:
            guess = (f" (counting {', '.join(assumed)} at {ASSUMED_DIM} dims: not known before the model loads)"
                     if assumed else "")
            raise UserError(
                f"not enough disk: the outputs still to make ({' and '.join(entry['what'])}) need about "
                f"{_bytes(device['needed_bytes'])} in {', '.join(device['folders'])}{guess}, and that file "
                f"system has {_bytes(device['free_bytes'])} free; free some space, move results/ or "
                "database.pgdata to a larger disk, or embed fewer chunks (test_mode.max_chunks)"
            )
    return report


def check_planned_disk(plan_params: dict, accepted: int, rejected: int, chunks: str) -> tuple[list, dict]:
    models = {key: {**facts, "dim": model_dim(facts)} for key, facts in plan_params["outputs"]["models"].items()}
    plan = PlannedOutputs(**{**plan_params["outputs"], "models": models})
    max_chunks = plan_params["max_chunks"]
    rows = accepted if max_chunks is None else min(accepted, max_chunks)
    # Text and metadata of the table rows: the chunks file's share for those rows.
    text_bytes = int(Path(chunks).stat().st_size * rows / (accepted + rejected))
    assumed = sorted(model for model, facts in models.items() if not facts["dim"])
    disk = check_disk(estimate_outputs(plan, rows, text_bytes), assumed)
    for entry in disk:
        log.info("disk: about %s to write in %s, %s free", _bytes(entry["needed_bytes"]),
                 ", ".join(entry["folders"]), _bytes(entry["free_bytes"]))
    return disk, {model: ASSUMED_DIM for model in assumed}


def main(snakemake) -> None:
    timer = Timer()
    text_field, policy = snakemake.params.text_field, snakemake.params.on_bad_chunk
    chunks = snakemake.input.chunks
    with RecordsWriter(snakemake.output.records) as records:
        summary = validate_chunks(chunks, text_field, policy, accepted=records.add)
        records.corpus_sha256 = summary.sha256
    for record in summary.rejected:
        log.warning("rejected %s: chunk #%d (id %s): %s", chunks, record["position"] + 1,
                    "unknown" if record["id"] is None else repr(record["id"]), record["reason"])
    write_rejected(snakemake.output.rejected, summary.rejected)
    log.info("%s: %d chunks accepted, %d rejected (%s)", chunks, summary.count, len(summary.rejected),
             snakemake.output.rejected)
    plan = params_json(snakemake, "plan")
    disk, assumed = check_planned_disk(plan, summary.count, len(summary.rejected), chunks)
    facts = {
        "corpus": {"path": chunks, "sha256": summary.sha256, "text_field": text_field, "accepted": summary.count,
                   "rejected": len(summary.rejected), "rejected_file": snakemake.output.rejected,
                   "on_bad_chunk": policy},
        "disk": disk,
        "dims_assumed": assumed,
    }
    write_json(snakemake.output.report, facts)
    timer.stop()
    for output in (snakemake.output.report, snakemake.output.rejected, snakemake.output.records):
        write_provenance(
            output,
            rule=snakemake.rule,
            wildcards={},
            config={"text_field": text_field,
                    "untracked (see rules/preflight.smk)": {"on_bad_chunk": policy, "plan": plan}},
            inputs=list(snakemake.input),
            timing=timer.record(summary.count + len(summary.rejected), unit="chunks"),
            extra={"corpus": facts["corpus"]},
        )


def run(snakemake) -> None:
    run_rule(snakemake, main)
