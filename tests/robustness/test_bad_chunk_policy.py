"""on_bad_chunk: skip, end to end: the rest is embedded, verified, loaded and evaluated;
the rejected chunks are listed and counted everywhere, never dropped silently."""

from __future__ import annotations

import json

import pytest

from conftest import example_chunks, job_counts

# Bad lines among 12 good chunks of a JSON Lines file: (line, what is wrong with it).
GOOD = example_chunks(12)
BAD = {
    3: '{"id": "nul", "content": "a NUL \\u0000 in the text"}',
    6: json.dumps({"id": GOOD[0]["id"], "content": "the first chunk's id again"}),
    9: '{"id": "cut", "content": "a line cut sh',
    14: '{"id": "nan", "content": "fine text", "score": NaN}',
}


def corpus_lines() -> list[str]:
    lines = [json.dumps(chunk) for chunk in GOOD]
    for number in sorted(BAD):
        lines.insert(number - 1, BAD[number])
    return lines


@pytest.fixture(scope="module")
def skipping(tmp_path_factory, tiny_model):
    from conftest import make_workflow

    workflow = make_workflow(tmp_path_factory.mktemp("skip") / "workflow")
    workflow.path("data/chunks.jsonl").write_text("\n".join(corpus_lines()) + "\n")
    workflow.path("data/queries.jsonl").write_text("".join(
        json.dumps({"query_id": f"q{i}", "query": GOOD[i]["content"][:80], "relevant": [GOOD[i]["id"]]}) + "\n"
        for i in (1, 4, 7)))
    workflow.update_config(
        chunks="data/chunks.jsonl", queries="data/queries.jsonl", on_bad_chunk="skip",
        models={"tiny": {"source": str(tiny_model)}}, precisions=["float32"],
    )
    done = workflow.snakemake("--cores", "2")
    workflow.console = done.stdout + done.stderr
    return workflow


def test_the_rejected_file_names_each_bad_chunk(skipping):
    records = [json.loads(line) for line in skipping.path("results/rejected/chunks.jsonl").read_text().splitlines()]
    assert [(r["line"], r["position"], r["id"]) for r in records] == [
        (3, 2, "nul"), (6, 5, GOOD[0]["id"]), (9, 8, None), (14, 13, "nan")]
    assert records[0]["reason"].startswith("'content' contains a NUL character (U+0000) at character 7")
    assert records[1]["reason"].startswith(f"duplicate id '{GOOD[0]['id']}' at chunk #1 and chunk #6")
    assert records[2]["reason"].startswith("not valid JSON at column")
    assert records[3]["reason"] == "metadata 'score' is NaN, which JSON (and so PostgreSQL's jsonb) has no number for"
    assert "WARNING embedflow.preflight: rejected data/chunks.jsonl: chunk #3 (id 'nul'): 'content'" in skipping.console


def test_the_counts_are_in_provenance_verify_and_the_summary(skipping):
    preflight = json.loads(skipping.path("results/preflight.json").read_text())["corpus"]
    assert (preflight["accepted"], preflight["rejected"]) == (12, 4)
    embed = json.loads(skipping.path("results/embeddings/embeddings_tiny_float32.parquet.provenance.json").read_text())
    assert (embed["corpus"]["embedded"], embed["corpus"]["rejected"]) == (12, 4)
    report = json.loads(skipping.path("results/verify/tiny_float32.json").read_text())
    assert report["status"] != "fail" and report["summary"]["chunks_rejected"] == 4
    assert "4 chunk(s) of the chunks file were rejected (on_bad_chunk: skip)" in \
        skipping.path("results/verify/tiny_float32.md").read_text()
    loaded = json.loads(skipping.path("results/db/tiny_float32.loaded.json.provenance.json").read_text())
    assert loaded["corpus"]["rejected"] == 4
    summary = skipping.path("results/eval/summary.md").read_text()
    assert ("Corpus data/chunks.jsonl: 12 chunks embedded and searched; 4 rejected (on_bad_chunk: skip) and left "
            "out, listed in results/rejected/chunks.jsonl.") in summary


def test_the_table_holds_the_rest(skipping):
    from embedflow.database import DatabaseSettings, connect

    with connect(DatabaseSettings(pgdata=str(skipping.path("results/pgdata")))) as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM tiny_float32 ORDER BY id")]
    assert ids == sorted(str(chunk["id"]) for chunk in GOOD)


def test_switching_to_fail_reruns_nothing_and_refuses_the_next_run_with_jobs(skipping):
    before = {path: path.stat().st_mtime_ns for path in skipping.root.glob("results/**/*.*")}
    config = skipping.config
    config["on_bad_chunk"] = "fail"
    skipping.set_config(config)
    assert job_counts(skipping.snakemake("--dry-run").stdout) == {}  # the policy changes no output
    config["precisions"] = ["float32", "float16"]  # work to do: the run now starts, and is refused
    skipping.set_config(config)
    done = skipping.snakemake(check=False)
    console = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in console
    assert ("Before any job: on_bad_chunk is fail, but data/chunks.jsonl has 4 chunk(s) that preflight rejected "
            "(listed in results/rejected/chunks.jsonl); fix them, or set on_bad_chunk: skip") in console
    assert {path: path.stat().st_mtime_ns for path in skipping.root.glob("results/**/*.*")} == before
