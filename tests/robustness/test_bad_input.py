"""Bad input through the whole workflow: a non-zero exit, one message naming the place, no output."""

from __future__ import annotations

import json

import pytest

from conftest import embed_log as shard_logs, example_chunks, write_chunks
from embedflow.embeddings_file import read_all


# The float32 file by name: Snakemake 9.27's --until stops at the checkpoint shard_plan.
FLOAT32 = "results/embeddings/embeddings_minilm_float32.parquet"


def run_failing(workflow, *args):
    done = workflow.snakemake(*args, check=False)
    assert done.returncode != 0
    return done.stdout + done.stderr


def preflight_log(workflow) -> str:
    """Rule preflight validates the chunks before any model job (embedflow.preflight)."""
    return workflow.path("results/logs/preflight.log").read_text()


def embed_log(workflow) -> str:
    return shard_logs(workflow, "minilm")


def assert_nothing_written(workflow):
    """No model job started: no embeddings, not even an embed log."""
    assert not list(workflow.path("results/embeddings").glob("*"))
    assert not workflow.path("results/logs/embed").exists()


BAD_CHUNKS = {
    "empty_file": ("chunks.json", b"", "is empty"),
    "empty_array": ("chunks.json", b"[]", "contains no chunks"),
    "not_json": ("chunks.json", b"id,content\n1,text\n", "not valid JSON at line 1, column 1"),
    "truncated": ("chunks.json", b'[{"id": 1, "content": "a"}, {"id": 2, "con', "not valid JSON at line 1"),
    "object": ("chunks.json", b'{"chunks": []}', "top level is an object"),
    "jsonl_bad_line": ("chunks.jsonl", b'{"id": 1, "content": "a"}\n{"id": 2, "content": "b"}\n{oops}\n',
                       "chunks.jsonl, line 3: not valid JSON"),
    "id_null": ("chunks.json", b'[{"id": null, "content": "a"}]', "chunk #1: 'id' must be a string or an integer, got null"),
    "id_list": ("chunks.json", b'[{"id": [1], "content": "a"}]', "got a list"),
    "id_float": ("chunks.json", b'[{"id": 1.5, "content": "a"}]', "got a float"),
    "id_duplicated": ("chunks.json", b'[{"id": "a", "content": "x"}, {"id": "a", "content": "y"}]',
                      "duplicate id 'a' at chunk #1 and chunk #2"),
    "content_empty": ("chunks.json", b'[{"id": "a", "content": ""}]', "chunk #1 (id 'a'): 'content' is empty"),
    "content_whitespace": ("chunks.json", b'[{"id": "a", "content": "  \\t"}]', "'content' is only whitespace"),
    "content_not_string": ("chunks.json", b'[{"id": "a", "content": 42}]', "'content' must be a string, got an integer"),
    "invalid_utf8": ("chunks.json", b'[{"id": "a",\n"content": "caf\xe9"}]', "line 2: not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHUNKS))
def test_bad_chunks_file(workflow, case):
    name, raw, message = BAD_CHUNKS[case]
    workflow.path(f"data/{name}").write_bytes(raw)
    workflow.update_config(chunks=f"data/{name}")
    console = run_failing(workflow)
    log = preflight_log(workflow)
    assert message in log and f"data/{name}" in log, log
    assert log.count(" ERROR ") == 1 and "Traceback" not in log
    assert message in console and "Traceback" not in console
    assert_nothing_written(workflow)


def test_summary_as_text_field_missing_on_some_chunks(workflow):
    chunks = example_chunks(5)
    del chunks[3]["summary"]
    write_chunks(workflow.path("data/chunks.json"), chunks)
    workflow.update_config(text_field="summary")
    run_failing(workflow)
    assert f"chunk #4 (id '{chunks[3]['id']}'): has no 'summary' (it is the configured text field" in preflight_log(workflow)
    assert_nothing_written(workflow)


def test_one_bad_chunk_at_the_end_of_100k_is_found_before_the_model_loads(workflow):
    lines = [json.dumps({"id": i, "content": f"text {i}"}) for i in range(100_000)]
    lines.append(json.dumps({"id": "last", "content": None}))
    workflow.path("data/big.jsonl").write_text("\n".join(lines) + "\n")
    workflow.update_config(chunks="data/big.jsonl")
    run_failing(workflow)
    log = preflight_log(workflow)
    assert "data/big.jsonl, line 100001: chunk #100001 (id 'last'): has no 'content'" in log
    assert_nothing_written(workflow)  # no model was loaded


def test_a_1mb_chunk_is_embedded_truncated_with_a_warning(workflow):
    chunks = example_chunks(3)
    chunks[1]["content"] = "word " * 200_000
    write_chunks(workflow.path("data/chunks.json"), chunks)
    workflow.update_config(precisions=["float32"], models={"minilm": {"source": "bundled:all-MiniLM-L6-v2", "max_seq_length": 128}})
    workflow.snakemake("--", FLOAT32)
    _, rows = read_all(workflow.path("results/embeddings/embeddings_minilm_float32.parquet"))
    assert rows.ids == [str(c["id"]) for c in chunks]
    log = embed_log(workflow)
    assert "exceed max_seq_length=128 tokens (longest 2000" in log  # 200,000 words, ~200,002 tokens
    assert "chunk(s) were longer than max_seq_length=128 tokens and were embedded truncated" in log


HOSTILE_CONFIG = {
    "unknown_precision": ({"precisions": ["float32", "int4"]}, "'int4' is not one of"),
    "negative_batch_size": ({"models": {"minilm": {"source": "bundled:all-MiniLM-L6-v2", "batch_size": -1}}},
                            "-1 is less than the minimum of 1"),
    "bad_model_key": ({"models": {"Mini-LM": {"source": "bundled:all-MiniLM-L6-v2"}}}, "does not match"),
    "unknown_model_setting": ({"models": {"minilm": {"source": "bundled:all-MiniLM-L6-v2", "dims": 3}}},
                              "Additional properties are not allowed ('dims'"),
    "table_template_injection": ({"database": {"table": 'x"; DROP TABLE users; --{model}{precision}'}},
                                 "is not a valid identifier"),
    "table_template_unknown_field": ({"database": {"table": "{model}_{dim}"}}, "is not a valid template"),
    # One table for two model × precision: the second load would replace the first's.
    "table_template_without_precision": ({"database": {"table": "t_{model}"}},
                                         "gives minilm × float32 and minilm × float16 the same table 't_minilm'"),
    "table_name_longer_than_49_bytes": ({"database": {"table": "{model}_{precision}_vectors_for_semantic_search_version2"}},
                                        "'minilm_float32_vectors_for_semantic_search_version2' is 51 bytes, more than 49"),
    "table_named_like_the_registry": ({"precisions": ["float32"], "database": {"table": "embedflow_tables"}},
                                      "the workflow's registry of loaded tables"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONFIG))
def test_hostile_config_fails_at_planning(workflow, case):
    changes, message = HOSTILE_CONFIG[case]
    workflow.update_config(**changes)
    output = run_failing(workflow, "--dry-run")
    assert message in output, output
    assert not workflow.path("results").exists()
