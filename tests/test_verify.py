"""The verify stage: good files pass, each kind of damage fails its own check, and through
Snakemake a failing check stops the job with its findings in the log and no report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import copy_of, job_counts, make_workflow
from embedflow.config import measure_slice, model_output_slice, selection_slice, verify_slice
from embedflow.config_file import load_config
from embedflow.embeddings_file import EmbeddingsWriter, read_all, read_metadata
from embedflow.hashing import sha256_file
from embedflow.verify import TopK, VerifySettings, aligned, verify_embeddings
from embedflow.embeddings_file import EmbeddingsBatch

CHUNKS = 12
PRECISIONS = ["float32", "float16", "int8", "binary"]


def reports(models=("minilm",), precisions=PRECISIONS) -> list[str]:
    """The verify reports as Snakemake targets (after "--", which ends --resources' list): the
    stages up to verify, not the database."""
    return ["--"] + [f"results/verify/{m}_{p}.{x}" for m in models for p in precisions for x in ("json", "md")]


@pytest.fixture(scope="module")
def finished(small_run):
    """The session's run of the default pipeline on 12 example chunks (tests/conftest.py), which
    embedded, converted, probed and verified every precision."""
    assert set(PRECISIONS) <= set(small_run.config["precisions"])
    assert len(json.loads(small_run.path("data/chunks.json").read_text())) == CHUNKS
    return small_run


def embeddings(workflow, precision) -> Path:
    return workflow.path(f"results/embeddings/embeddings_minilm_{precision}.parquet")


def settings(workflow, precision, model="minilm") -> VerifySettings:
    config = load_config(workflow.config_path)
    spec = config["models"][model]
    return VerifySettings(
        model_key=model,
        precision=precision,
        model=model_output_slice(spec),
        selection=selection_slice(config),
        checks={**measure_slice(config), "thresholds": verify_slice(config, spec, precision)},
    )


def verify(workflow, parquet, precision, chunks=None):
    return verify_embeddings(
        parquet,
        chunks=chunks or workflow.path("data/chunks.json"),
        provenance=f"{parquet}.provenance.json",
        embed_provenance=f"{embeddings(workflow, 'float32')}.provenance.json",
        probes=workflow.path("results/verify/minilm.probes.parquet"),
        settings=settings(workflow, precision),
        reference=None if precision == "float32" else embeddings(workflow, "float32"),
    )


def failing(report) -> set[str]:
    return {check.name for check in report.failing()}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_good_file_passes_every_check(finished, precision):
    report = verify(finished, embeddings(finished, precision), precision)
    assert report.status == "pass", [(c.name, c.value, c.detail) for c in report.checks if c.status != "pass"]
    assert not report.not_run
    names = {check.name for check in report.checks}
    assert {"row_count", "ids_order", "text_hashes", "finite", "self_retrieval", "model_reproduces"} <= names
    if precision != "float32":
        assert {"drift_mean_cosine", "drift_min_cosine", "top10_overlap"} <= names
    assert {"int8": "int8_decode", "binary": "binary_decode"}.get(precision, "norms") in names
    queries = report.spot_check["queries"]
    assert len(queries) == 5 and all(len(q["hits"]) == 5 for q in queries)
    assert report.spot_check["self_retrieval"]["rate"] == 1.0


# --- damaged copies -------------------------------------------------------------------


def rewrite(workflow, tmp_path, precision, *, rows=None, ids=None, vectors=None, meta=None) -> Path:
    """A copy of the pipeline's file with some part replaced, and a provenance record that
    matches the copy, as if the pipeline itself had written it."""
    source = embeddings(workflow, precision)
    original_meta, batch = read_all(source)
    order = np.arange(len(batch.ids)) if rows is None else np.asarray(rows)
    new_ids = [batch.ids[i] for i in order] if ids is None else ids
    new_vectors = batch.vectors[order] if vectors is None else vectors
    hashes = [batch.hashes[i] for i in order]
    target = tmp_path / source.name
    with EmbeddingsWriter(target, replace(original_meta, **(meta or {}))) as writer:
        writer.write(new_ids, new_vectors, hashes)
    record = json.loads(Path(f"{source}.provenance.json").read_text())
    record["output"] = {"path": str(target), "sha256": sha256_file(target), "bytes": target.stat().st_size}
    Path(f"{target}.provenance.json").write_text(json.dumps(record))
    return target


# Damage goes in rows past the 8 that rule probe encodes again (verify.reencode_rows), so that
# model_reproduces, which compares those, is not one of the checks it fails.
def float32_vectors(workflow):
    return read_all(embeddings(workflow, "float32"))[1].vectors.copy()


def with_nan(workflow, tmp_path):
    vectors = float32_vectors(workflow)
    vectors[8, 5] = np.nan
    return rewrite(workflow, tmp_path, "float32", vectors=vectors)


def with_zero_vector(workflow, tmp_path):
    vectors = float32_vectors(workflow)
    vectors[9] = 0
    return rewrite(workflow, tmp_path, "float32", vectors=vectors)


def with_wrong_dim(workflow, tmp_path):
    vectors = float32_vectors(workflow)[:, :383]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return rewrite(workflow, tmp_path, "float32", vectors=vectors, meta={"dim": 383})


def with_missing_row(workflow, tmp_path):
    return rewrite(workflow, tmp_path, "float32", rows=[i for i in range(CHUNKS) if i != 10])


def with_duplicated_id(workflow, tmp_path):
    ids = read_all(embeddings(workflow, "float32"))[1].ids
    return rewrite(workflow, tmp_path, "float32", ids=ids[:11] + [ids[9]])


def shuffled(workflow, tmp_path):
    return rewrite(workflow, tmp_path, "float32", rows=np.random.default_rng(0).permutation(CHUNKS))


def int8_with_wrong_ranges(workflow, tmp_path):
    ranges = read_metadata(embeddings(workflow, "int8")).ranges_array()
    return rewrite(workflow, tmp_path, "int8", meta={"int8_ranges": (ranges * 0.5).tolist()})


def naming_another_model(workflow, tmp_path):
    return rewrite(workflow, tmp_path, "float32", meta={"model": "other"})


DAMAGE = {
    # damage: (make the copy, its precision, the checks that fail: the named one first)
    "nan": (with_nan, "float32", {"finite"}),
    "zero_vector": (with_zero_vector, "float32", {"zero_vectors"}),
    "wrong_dim": (with_wrong_dim, "float32", {"dim", "metadata"}),  # metadata: embed recorded 384
    "missing_row": (with_missing_row, "float32", {"row_count", "ids_match", "ids_order"}),
    "duplicated_id": (with_duplicated_id, "float32", {"ids_unique", "ids_match", "ids_order", "text_hashes"}),
    "shuffled_order": (shuffled, "float32", {"ids_order"}),
    "int8_wrong_ranges": (int8_with_wrong_ranges, "int8", {"int8_decode"}),
    "metadata_names_another_model": (naming_another_model, "float32", {"metadata"}),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_fails_its_check_and_only_related_ones(finished, tmp_path, damage):
    make, precision, expected = DAMAGE[damage]
    report = verify(finished, make(finished, tmp_path), precision)
    assert report.status == "fail"
    assert failing(report) == expected, [(c.name, c.detail) for c in report.failing()]


def test_damage_is_named_in_the_findings(finished, tmp_path):
    report = verify(finished, with_nan(finished, tmp_path / "nan"), "float32")
    ids = read_all(embeddings(finished, "float32"))[1].ids
    assert f"row 8 (id {ids[8]!r})" in report.check("finite").detail
    report = verify(finished, with_duplicated_id(finished, tmp_path / "dup"), "float32")
    assert repr(ids[9]) in report.check("ids_unique").detail
    report = verify(finished, shuffled(finished, tmp_path / "shuffled"), "float32")
    assert report.check("ids_match").status == report.check("text_hashes").status == "pass"
    assert report.check("ids_order").value > 0
    report = verify(finished, naming_another_model(finished, tmp_path / "model"), "float32")
    assert "model: file says 'other', expected 'minilm'" in report.check("metadata").detail


def test_chunks_edited_after_embedding(finished, tmp_path):
    chunks = json.loads(finished.path("data/chunks.json").read_text())
    chunks[4]["content"] += " (edited)"
    edited = tmp_path / "chunks.json"
    edited.write_text(json.dumps(chunks, indent=1))
    report = verify(finished, embeddings(finished, "float32"), "float32", chunks=edited)
    assert failing(report) == {"text_hashes", "chunks_sha256"}
    assert report.check("text_hashes").value == 1
    assert repr(chunks[4]["id"]) in report.check("text_hashes").detail


def test_markdown_renders_tables_a_person_reads(finished):
    text = finished.path("results/verify/minilm_int8.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# Verify: minilm / int8: PASS"
    header = lines.index("| check | status | value | threshold |")
    assert lines[header + 1] == "|---|---|---|---|"
    rows = [line for line in lines[header + 2 :] if line.startswith("| ")]
    assert len(rows) >= 15 and all(line.count(" | ") == 3 for line in rows[:15])
    assert "| int8_decode | pass | 1 | ≥ 0.99 (warn < 0.999) |" in text
    assert text.count("| rank | id | score | first words | in float32 top |") == 5
    assert "### “read a whole text file into a string”" in text


def test_snakemake_writes_json_and_markdown_with_provenance(finished):
    for precision in PRECISIONS:
        report = json.loads(finished.path(f"results/verify/minilm_{precision}.json").read_text())
        assert report["status"] == "pass" and report["precision"] == precision
        assert {"name", "status", "value", "threshold", "detail"} <= set(report["checks"][0])
        for suffix in ("json", "md"):
            output = finished.path(f"results/verify/minilm_{precision}.{suffix}")
            record = json.loads(Path(f"{output}.provenance.json").read_text())
            assert record["rule"] == "verify" and record["output"]["sha256"] == sha256_file(output)
            assert record["config"]["thresholds"]["self_retrieval"] == {"warn": 0.99, "fail": 0.9}
            assert record["inputs"][0]["path"] == f"results/verify/minilm_{precision}.measures.json"
    probes = finished.path("results/verify/minilm.probes.parquet")
    assert pq.read_table(probes).num_rows == 5 + 8
    assert json.loads(Path(f"{probes}.provenance.json").read_text())["rule"] == "probe"


def test_a_threshold_reruns_that_judging_only_and_a_failing_check_stops_the_job(finished, tmp_path):
    workflow = copy_of(finished, tmp_path / "workflow")
    config = workflow.config
    config["verify"]["thresholds"]["drift"]["int8"]["top10_overlap"] = {"warn": 1.5, "fail": 1.2}
    workflow.set_config(config)
    plan = workflow.snakemake("--dry-run", *reports()).stdout
    # thresholds judge measurements: that precision's verify alone, nothing is read again
    assert job_counts(plan) == {"verify": 1}
    assert "wildcards: model=minilm, precision=int8" in plan
    other_report = workflow.path("results/verify/minilm_float16.json")
    other_written = other_report.stat().st_mtime_ns

    done = workflow.snakemake(*reports(), check=False)
    assert done.returncode != 0
    log = workflow.path("results/logs/verify/minilm_int8.log").read_text()
    assert "verify minilm / int8 FAILED; the failing checks:" in log
    assert "| top10_overlap | **FAIL** |" in log
    assert "Traceback" not in log
    assert "top10_overlap" in done.stderr
    for suffix in ("json", "md", "json.provenance.json"):
        assert not workflow.path(f"results/verify/minilm_int8.{suffix}").exists(), suffix
    assert other_report.stat().st_mtime_ns == other_written  # the other precisions' reports stand


def test_adapter_must_change_the_vectors(tmp_path, tiny_model, tiny_lora_adapter):
    """An adapter whose LoRA B is zero (what peft initialises) changes nothing: verify fails
    on it. The trained tiny adapter changes every probe text, and passes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from embedflow.probe import ProbeSettings, probe_model

    inert = tmp_path / "inert-adapter"
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    get_peft_model(AutoModel.from_pretrained(tiny_model), config).save_pretrained(inert)
    workflow = make_workflow(tmp_path / "workflow", 12)
    workflow.update_config(models={"inert": {"source": str(tiny_model), "adapter": str(inert)}}, precisions=["float32"])
    done = workflow.snakemake(*reports(["inert"], ["float32"]), check=False)
    assert done.returncode != 0
    assert not workflow.path("results/verify/inert_float32.json").exists()
    log = workflow.path("results/logs/verify/inert_float32.log").read_text()
    assert "| adapter | **FAIL** | 1" in log and "1 check(s) failed: adapter" in log

    # The trained adapter, through the same code: probe in this process, then verify.
    spec = {**load_config(workflow.config_path)["models"]["inert"], "adapter": str(tiny_lora_adapter)}
    float32 = workflow.path("results/embeddings/embeddings_inert_float32.parquet")
    probes = tmp_path / "tuned.probes.parquet"
    queries = load_config(workflow.config_path)["verify"]["probe_queries"]
    probe_model(float32, workflow.path("data/chunks.json"), probes,
                ProbeSettings("inert", spec, queries, reencode_rows=2, device="cpu"))
    tuned = replace(settings(workflow, "float32", model="inert"), model=model_output_slice(spec))
    report = verify_embeddings(
        float32, chunks=workflow.path("data/chunks.json"), provenance=f"{float32}.provenance.json",
        embed_provenance=f"{float32}.provenance.json", probes=probes, settings=tuned,
    )
    adapter = report.check("adapter")
    assert adapter.status == "pass" and adapter.value < 0.9999, adapter


# --- the streaming pieces -------------------------------------------------------------


def test_running_top_k_equals_a_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(7, 1000)).astype(np.float32)
    top = TopK(7, 10)
    for start in range(0, 1000, 97):
        top.update(scores[:, start : start + 97], start)
    got_scores, got_index = top.ranked()
    expected = np.argsort(-scores, axis=1)[:, :10]
    np.testing.assert_array_equal(got_index, expected)
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, expected, 1))


def test_aligned_pairs_rows_whatever_the_batch_sizes():
    def stream(sizes, start=0):
        for size in sizes:
            ids = [str(i) for i in range(start, start + size)]
            yield EmbeddingsBatch(ids, np.arange(start, start + size).reshape(-1, 1), ids)
            start += size

    pairs = list(aligned(stream([5, 5, 3]), stream([4, 4, 4])))
    assert sum(len(left.ids) for left, _ in pairs) == 13
    for left, right in pairs:
        if right is not None:
            assert left.ids == right.ids
    assert pairs[-1][1] is None and pairs[-1][0].ids == ["12"]  # the reference is one row short


def test_texts_at_positions_reads_json_lines_as_the_chunks_reader_does(tmp_path):
    from conftest import write_chunks
    from embedflow.chunks import iter_chunks
    from embedflow.verify import texts_at_positions

    path = write_chunks(tmp_path / "chunks.jsonl", [{"id": i, "content": f"text {i}"} for i in range(6)])
    path.write_text(path.read_text().replace("\n", "\n\n", 2))  # blank lines do not count
    expected = {chunk.position: chunk.text for chunk in iter_chunks(path, "content", [1, 4])}
    assert texts_at_positions(path, "content", [4, 1]) == expected == {1: "text 1", 4: "text 4"}
