"""Every verify check seen failing on a defect planted in the real files of a small run.

The session's small run (12 chunks, the bundled model, every precision: tests/conftest.py) is
shared by the module. A defect is planted either in a copy of one file, then measured and judged as rule
``measure`` and ``verify`` do (``verify_embeddings``), or in a copy of the whole run, then
Snakemake is run again and decides itself what to rerun. Each test asserts that the check
meant to catch the defect fails, and that the checks with nothing to do with it still pass.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Workflow, copy_of, example_chunks
from embedflow.config import measure_slice, model_output_slice, selection_slice, verify_slice
from embedflow.config_file import load_config
from embedflow.embeddings_file import EmbeddingsWriter, read_all
from embedflow.hashing import sha256_file
from embedflow.precision import convert
from embedflow.verify import Report, VerifySettings, judge, verify_embeddings

CHUNKS = 12
PRECISIONS = ["float32", "float16", "binary"]
REENCODED = 8  # verify.reencode_rows: probe encodes the first 8 chunks again
ANOTHER_PROMPT = "query: "  # moves MiniLM's vectors to a min cosine of about 0.9 (fail below 0.98)


def reports(*precisions: str) -> list[str]:
    """Verify reports as Snakemake targets ("--" ends the list --resources takes)."""
    return ["--"] + [f"results/verify/minilm_{p}.{x}" for p in precisions for x in ("json", "md")]


@pytest.fixture(scope="module")
def finished(small_run) -> Workflow:
    """embed, convert, probe, measure and verify (and load) on 12 example chunks; every report passes."""
    assert set(PRECISIONS) <= set(small_run.config["precisions"])
    assert len(json.loads(small_run.path("data/chunks.json").read_text())) == CHUNKS
    return small_run


@pytest.fixture
def copy(finished, tmp_path) -> Workflow:
    """This test's own copy of the finished run: files, their times and Snakemake's records."""
    return copy_of(finished, tmp_path / "workflow")


def embeddings(workflow, precision) -> Path:
    return workflow.path(f"results/embeddings/embeddings_minilm_{precision}.parquet")


def provenance(path) -> Path:
    return Path(f"{path}.provenance.json")


def settings(workflow, precision) -> VerifySettings:
    config = load_config(workflow.config_path)
    spec = config["models"]["minilm"]
    return VerifySettings(
        model_key="minilm",
        precision=precision,
        model=model_output_slice(spec),
        selection=selection_slice(config),
        checks={**measure_slice(config), "thresholds": verify_slice(config, spec, precision)},
    )


def verify(workflow, parquet, precision, record=None) -> Report:
    """Measure and judge ``parquet`` against the run's chunks, probes and float32 file."""
    return verify_embeddings(
        parquet,
        chunks=workflow.path("data/chunks.json"),
        provenance=record or provenance(parquet),
        embed_provenance=provenance(embeddings(workflow, "float32")),
        probes=workflow.path("results/verify/minilm.probes.parquet"),
        settings=settings(workflow, precision),
        reference=None if precision == "float32" else embeddings(workflow, "float32"),
    )


def judged(workflow, precision) -> Report:
    """What rule verify made of the measurements rule measure kept (also when it failed)."""
    record = json.loads(workflow.path(f"results/verify/minilm_{precision}.measures.json").read_text())
    return judge(Report.from_measurements(record), settings(workflow, precision).checks["thresholds"])


def not_passing(report) -> dict[str, str]:
    return {check.name: check.status for check in report.checks if check.status != "pass"}


def record_for(source: Path, target: Path) -> None:
    """A provenance record for ``target`` copied from ``source``'s, with the target's sha256 and
    size: the file looks as if the pipeline had written it."""
    record = json.loads(provenance(source).read_text())
    record["output"] = {"path": str(target), "sha256": sha256_file(target), "bytes": target.stat().st_size}
    provenance(target).write_text(json.dumps(record))


def planted(workflow, folder: Path, precision, vectors) -> Path:
    """A copy of the run's ``precision`` file with other stored vectors, written as embed and
    convert write files, with a matching provenance record."""
    source = embeddings(workflow, precision)
    meta, batch = read_all(source)
    target = folder / source.name
    with EmbeddingsWriter(target, meta) as writer:
        writer.write(batch.ids, vectors, batch.hashes)
    record_for(source, target)
    return target


def planted_table(workflow, folder: Path, precision, change) -> Path:
    """A copy of the run's ``precision`` file whose Arrow table ``change`` rewrote (the schema's
    metadata kept), with a matching provenance record."""
    source = embeddings(workflow, precision)
    table = pq.read_table(source)
    target = folder / source.name
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), target)
    record_for(source, target)
    return target


def float32_vectors(workflow) -> np.ndarray:
    return read_all(embeddings(workflow, "float32"))[1].vectors.copy()


def test_the_run_passes_every_check(finished):
    """The ground the defects stand on: each planted file below differs from a passing one."""
    for precision in PRECISIONS:
        report = verify(finished, embeddings(finished, precision), precision)
        assert not_passing(report) == {}, precision
        assert judged(finished, precision).status == "pass"


# --- provenance ---------------------------------------------------------------------------


def test_provenance_fails_on_a_file_that_is_not_the_one_recorded(copy):
    """The binary file rewritten with the same rows in other row groups: same content, other
    bytes, and the record no longer describes it. Snakemake measures it again (the file is newer
    than its measurements) and the verify job fails on provenance alone."""
    path = embeddings(copy, "binary")
    recorded = json.loads(provenance(path).read_text())["output"]
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=5, compression="zstd")
    assert sha256_file(path) != recorded["sha256"] and path.stat().st_size != recorded["bytes"]

    done = copy.snakemake(*reports("binary"), check=False)
    assert done.returncode != 0
    assert not copy.path("results/verify/minilm_binary.json").exists()
    log = copy.path("results/logs/verify/minilm_binary.log").read_text()
    assert "1 check(s) failed: provenance" in log
    check = judged(copy, "binary").check("provenance")
    assert check.status == "fail" and check.value == 2  # sha256 and size
    assert f"its provenance records {recorded['sha256'][:12]}" in check.detail
    assert f"its provenance records {recorded['bytes']}" in check.detail


def test_provenance_fails_on_a_float16_made_before_float32_was_embedded_again(copy):
    """float32 embedded again (another document prompt) after float16 was made from it, and the
    float16 file then looks newer than float32 (restored from a backup, copied in), so Snakemake
    does not convert it again: provenance sees that float16 was made from another float32."""
    config = copy.config
    config["models"]["minilm"]["document_prompt"] = ANOTHER_PROMPT
    copy.set_config(config)
    copy.snakemake("--", str(embeddings(copy, "float32").relative_to(copy.root)))
    float16 = embeddings(copy, "float16")
    made_from = json.loads(provenance(float16).read_text())["inputs"][0]["sha256"]
    assert made_from != sha256_file(embeddings(copy, "float32"))  # the float32 file did change
    for path in (float16, provenance(float16)):
        os.utime(path)

    done = copy.snakemake("--keep-going", *reports("float32", "float16"), check=False)
    assert done.returncode != 0
    assert json.loads(provenance(float16).read_text())["inputs"][0]["sha256"] == made_from  # not converted
    assert json.loads(copy.path("results/verify/minilm_float32.json").read_text())["status"] == "pass"
    assert not copy.path("results/verify/minilm_float16.json").exists()
    report = judged(copy, "float16")
    assert report.check("provenance").status == "fail"
    assert "was not derived from the current float32 file" in report.check("provenance").detail
    # The vectors did move (drift says so too); the file itself is sound.
    for name in ("layout", "metadata", "ids_order", "text_hashes", "norms", "model_reproduces"):
        assert report.check(name).status == "pass", name


# --- model_reproduces ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chunk_texts() -> list[str]:
    return [chunk["content"] for chunk in example_chunks(CHUNKS)]


@pytest.fixture(scope="module")
def bundled_encoder(finished):
    from embedflow.encoder import load_encoder

    spec = model_output_slice(load_config(finished.config_path)["models"]["minilm"])
    return load_encoder("minilm", spec, "auto", False)


@pytest.fixture(scope="module")
def another_model(tmp_path_factory, bundled_model_path) -> Path:
    """A randomly initialised one-layer BERT with MiniLM's tokenizer and width (384): vectors
    of the right shape from another model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("another-model")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=1,
                        num_attention_heads=6, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder / "backbone")
    tokenizer.save_pretrained(folder / "backbone")
    transformer = Transformer(str(folder / "backbone"), max_seq_length=64)
    SentenceTransformer(modules=[transformer, Pooling(384, pooling_mode="mean")]).save(str(folder / "model"))
    return folder / "model"


def test_model_reproduces_fails_on_vectors_made_with_another_document_prompt(finished, tmp_path,
                                                                            bundled_encoder, chunk_texts):
    vectors = bundled_encoder.encode(chunk_texts, ANOTHER_PROMPT, 8)
    report = verify(finished, planted(finished, tmp_path, "float32", vectors), "float32")
    assert not_passing(report) == {"model_reproduces": "fail"}
    assert report.check("model_reproduces").value < 0.98


def test_model_reproduces_fails_on_vectors_made_by_another_model(finished, tmp_path, another_model, chunk_texts):
    from embedflow.encoder import load_encoder

    spec = model_output_slice(load_config(finished.config_path)["models"]["minilm"])
    encoder = load_encoder("other", {**spec, "source": str(another_model)}, "auto", False)
    vectors = encoder.encode(chunk_texts, None, 8)
    report = verify(finished, planted(finished, tmp_path, "float32", vectors), "float32")
    assert not_passing(report) == {"model_reproduces": "fail"}


def test_model_reproduces_fails_on_vectors_stored_under_other_ids(finished, tmp_path):
    """Vectors shuffled across rows (ids and text hashes left in place). self_retrieval cannot
    see this (each row is still its own nearest neighbour); the re-encoded chunks can."""
    vectors = float32_vectors(finished)[np.random.default_rng(0).permutation(CHUNKS)]
    report = verify(finished, planted(finished, tmp_path, "float32", vectors), "float32")
    assert not_passing(report) == {"model_reproduces": "fail"}
    assert report.check("self_retrieval").value == 1.0


# --- layout -------------------------------------------------------------------------------


def with_embedding(table: pa.Table, values: np.ndarray) -> pa.Table:
    """``table`` with its embedding column replaced by ``values`` (rows, width) in their dtype."""
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return table.set_column(table.schema.get_field_index("embedding"), "embedding", column)


def one_value_short(table):
    return with_embedding(table, np.stack(table.column("embedding").to_numpy(zero_copy_only=False))[:, :-1])


def float32_values(table):
    return with_embedding(table, np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32))


LAYOUT_DEFECTS = {
    # defect: (the file it is planted in, the change, the column found, the column expected)
    "list_one_value_short": ("float32", one_value_short, "float32[383]", "float32[384]"),
    "float32_values_in_the_float16_file": ("float16", float32_values, "float32[384]", "float16[384]"),
}


@pytest.mark.parametrize("defect", LAYOUT_DEFECTS)
def test_layout_fails_on_an_embedding_column_of_another_type(finished, tmp_path, defect):
    precision, change, found, expected = LAYOUT_DEFECTS[defect]
    report = verify(finished, planted_table(finished, tmp_path, precision, change), precision)
    assert not_passing(report) == {"layout": "fail"}
    layout = report.check("layout")
    assert layout.value.startswith(found) and layout.threshold == {"equals": expected}
    # What needs no decoded vector is still checked, and passes: rows, ids, texts, provenance;
    # what does is not run.
    assert {"row_count", "ids_order", "text_hashes", "provenance", "metadata"} <= {c.name for c in report.checks}
    assert {"finite", "norms", "neighbours"} <= {item["name"] for item in report.not_run}


def integer_ids(table):
    return table.set_column(table.schema.get_field_index("id"), "id", pa.array(range(table.num_rows)))


BROKEN_COLUMNS = {
    # defect: (the change, what the layout finding says)
    "text_sha256_missing": (lambda table: table.drop(["text_sha256"]),
                            "column 'text_sha256' is missing or not a string"),
    "integer_ids": (integer_ids, "column 'id' is missing or not a string"),
}


@pytest.mark.parametrize("defect", BROKEN_COLUMNS)
def test_layout_fails_on_a_missing_or_mistyped_column(finished, tmp_path, defect):
    change, finding = BROKEN_COLUMNS[defect]
    report = verify(finished, planted_table(finished, tmp_path, "float32", change), "float32")
    assert report.check("layout").status == "fail"
    assert finding in report.check("layout").detail
    # The rows are still counted; what needs the id / text columns is reported as not run.
    assert report.check("parquet_readable").status == "pass"
    assert {"row_count", "ids_order", "text_hashes", "norms"} <= {item["name"] for item in report.not_run}


# --- norms, binary_decode, self_retrieval -------------------------------------------------


def test_norms_fail_on_a_row_that_is_not_unit_length(finished, tmp_path):
    vectors = float32_vectors(finished)
    vectors[3] *= 1.01
    report = verify(finished, planted(finished, tmp_path, "float32", vectors), "float32")
    assert not_passing(report) == {"norms": "fail"}
    assert report.check("norms").value == pytest.approx(0.01, rel=1e-3)
    assert repr(read_all(embeddings(finished, "float32"))[1].ids[3]) in report.check("norms").detail


def signs_flipped(vectors: np.ndarray, per_row: int) -> np.ndarray:
    """``vectors`` with the ``per_row`` smallest values of each row negated: bits that no longer
    match float32's signs, yet scores barely move."""
    flipped = vectors.copy()
    smallest = np.argsort(np.abs(vectors), axis=1)[:, :per_row]
    np.put_along_axis(flipped, smallest, -np.take_along_axis(vectors, smallest, 1), 1)
    return flipped


def test_binary_decode_fails_on_bits_that_are_not_the_float32_signs(finished, tmp_path):
    bits = convert(signs_flipped(float32_vectors(finished), per_row=8), "binary")  # 8 of 384: 2%
    report = verify(finished, planted(finished, tmp_path, "binary", bits), "binary")
    assert not_passing(report) == {"binary_decode": "fail"}
    assert report.check("binary_decode").value == pytest.approx(1 - 8 / 384)


def test_self_retrieval_fails_on_rows_that_collapsed_onto_one_vector(finished, tmp_path):
    """The rows past the re-encoded ones (4) given one vector, as a model that collapses does:
    none of them is its own nearest neighbour."""
    vectors = float32_vectors(finished)
    vectors[REENCODED:] = vectors[-1]
    report = verify(finished, planted(finished, tmp_path, "float32", vectors), "float32")
    assert not_passing(report) == {"self_retrieval": "fail"}
    assert report.check("self_retrieval").value == pytest.approx(REENCODED / CHUNKS)


# --- a warning ----------------------------------------------------------------------------


def one_bit_off(workflow) -> None:
    """The binary file with one bit of 4608 that is not its float32 sign (the value nearest 0),
    and a record that matches it, as if convert had written it."""
    path = embeddings(workflow, "binary")
    vectors = float32_vectors(workflow)
    vectors.flat[np.argmin(np.abs(vectors))] *= -1
    meta, batch = read_all(path)
    with EmbeddingsWriter(path, meta) as writer:
        writer.write(batch.ids, convert(vectors, "binary"), batch.hashes)
    record_for(path, path)


def loaded(workflow) -> Path:
    return workflow.path("results/db/minilm_binary.loaded.json")


def test_a_warning_stops_nothing(copy):
    """binary_decode warns on one bit off (0.99978: below 1, above 0.999). The verify job
    succeeds with a report that says warn, and the load (of the changed file) runs on it."""
    one_bit_off(copy)
    done = copy.snakemake(*reports("binary"), check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(copy.path("results/verify/minilm_binary.json").read_text())
    assert report["status"] == "warn"
    assert {c["name"]: c["status"] for c in report["checks"] if c["status"] != "pass"} == {"binary_decode": "warn"}
    assert "| binary_decode | **WARN** |" in copy.path("results/verify/minilm_binary.md").read_text()
    assert re.search(r"WARNING \S+ binary_decode +warn", copy.path("results/logs/verify/minilm_binary.log").read_text())

    done = copy.snakemake("--", str(loaded(copy).relative_to(copy.root)))
    assert re.search(r"Finished jobid: \d+ \(Rule: load\)", done.stderr)
    marker = json.loads(loaded(copy).read_text())
    assert marker["rows"] == CHUNKS and marker["parquet_sha256"] == sha256_file(embeddings(copy, "binary"))
    assert not copy.path("results/pgdata/postmaster.pid").exists()  # the load stopped its server


@pytest.mark.xfail(raises=AssertionError, strict=True, reason=(
    "Snakemake 9 drops a job whose output is missing when its only link to a job that reruns is an "
    "ancient() input (snakemake/snakemake#4166, open): load takes the report as ancient(), so a run "
    "that verifies again does not load a table not loaded yet; the next run does"))
def test_one_run_verifies_again_and_loads(copy):
    for marker in ("loaded", "index"):  # a table not loaded yet (the small run loaded it)
        for suffix in ("json", "json.provenance.json"):
            copy.path(f"results/db/minilm_binary.{marker}.{suffix}").unlink()
    one_bit_off(copy)
    done = copy.snakemake("--dry-run", "--", str(loaded(copy).relative_to(copy.root)))
    plan = done.stdout + done.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1].split("\n\n")[0], re.M))
    assert jobs == {"measure": "1", "verify": "1", "load": "1", "total": "3"}
