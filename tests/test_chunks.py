"""Bad chunks files: one clear message naming file, chunk and problem; no output."""

from __future__ import annotations

import json

import pytest

from conftest import write_chunks
from embedflow.chunks import iter_chunks, select_positions, validate_chunks
from embedflow.errors import InputError

GOOD = {"id": "a", "content": "first text", "summary": "first"}


def chunks_with(bad: dict, position: int = 1) -> list[dict]:
    chunks = [dict(GOOD, id=f"c{i}") for i in range(3)]
    chunks.insert(position, bad)
    return chunks


# (file name, file text, text_field, words the message must contain)
BAD_FILES = {
    "malformed": ("chunks.json", '[{"id": "a", "content": "x"},\n {"id": "b" "content": "y"}]', "content",
                  ["chunks.json", "line 2", "column 13", "not valid JSON"]),
    "truncated": ("chunks.json", '[{"id": "a", "content": "x"},\n {"id": "b"', "content",
                  ["chunks.json", "line 2", "not valid JSON"]),
    "object_not_array": ("chunks.json", '{"id": "a", "content": "x"}', "content",
                         ["chunks.json", "top level is an object", "JSON array"]),
    "empty_file": ("chunks.json", "", "content", ["chunks.json", "empty"]),
    "empty_array": ("chunks.json", "[]", "content", ["chunks.json", "no chunks"]),
    "element_not_object": ("chunks.json", '[{"id": "a", "content": "x"}, "text"]', "content",
                           ["chunk #2", "a string", "expected an object"]),
    "missing_id": ("chunks.json", json.dumps(chunks_with({"content": "x"})), "content",
                   ["chunks.json", "chunk #2", "has no 'id'"]),
    "null_id": ("chunks.json", json.dumps(chunks_with({"id": None, "content": "x"})), "content",
                ["chunk #2", "'id' must be a string or an integer, got null"]),
    "empty_id": ("chunks.json", json.dumps(chunks_with({"id": " ", "content": "x"})), "content",
                 ["chunk #2", "'id' is empty"]),
    "list_id": ("chunks.json", json.dumps(chunks_with({"id": [1], "content": "x"})), "content",
                ["chunk #2", "got a list"]),
    "float_id": ("chunks.json", json.dumps(chunks_with({"id": 1.5, "content": "x"})), "content",
                 ["chunk #2", "got a float"]),
    "missing_content": ("chunks.json", json.dumps(chunks_with({"id": "x"})), "content",
                        ["chunk #2 (id 'x')", "has no 'content'"]),
    "empty_content": ("chunks.json", json.dumps(chunks_with({"id": "x", "content": ""})), "content",
                      ["chunk #2 (id 'x')", "'content' is empty"]),
    "whitespace_content": ("chunks.json", json.dumps(chunks_with({"id": "x", "content": " \n"})), "content",
                           ["chunk #2 (id 'x')", "'content' is only whitespace"]),
    "content_not_string": ("chunks.json", json.dumps(chunks_with({"id": "x", "content": ["a"]})), "content",
                           ["chunk #2 (id 'x')", "'content' must be a string, got a list"]),
    "duplicate_id": ("chunks.json", json.dumps(chunks_with({"id": "c2", "content": "x"}, 0)), "content",
                     ["duplicate id 'c2'", "chunk #1", "chunk #4"]),
    "duplicate_id_as_text": ("chunks.json", json.dumps([{"id": 7, "content": "x"}, {"id": "7", "content": "y"}]),
                             "content", ["duplicate id '7'", "chunk #1", "chunk #2"]),
    "summary_missing": ("chunks.json", json.dumps(chunks_with({"id": "x", "content": "y"}, 3)), "summary",
                        ["chunk #4 (id 'x')", "has no 'summary'", "text_field: summary"]),
    "jsonl_bad_line": ("chunks.jsonl", '{"id": "a", "content": "x"}\n{"id": "b", "content": }\n', "content",
                       ["chunks.jsonl, line 2", "not valid JSON"]),
    "jsonl_missing_content": ("chunks.jsonl", '{"id": "a", "content": "x"}\n\n{"id": "b"}\n', "content",
                              ["chunks.jsonl, line 3", "chunk #2 (id 'b')", "has no 'content'"]),
    "invalid_utf8": ("chunks.json", None, "content", ["chunks.json", "line 2", "not valid UTF-8"]),
}


def write_bad(folder, name) -> tuple:
    file_name, text, text_field, words = BAD_FILES[name]
    path = folder / file_name
    if text is None:  # invalid UTF-8 on line 2
        path.write_bytes(b'[{"id": "a",\n "content": "caf\xe9"}]')
    else:
        path.write_text(text)
    return path, text_field, words


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_rejected_with_a_precise_message(tmp_path, name):
    path, text_field, words = write_bad(tmp_path, name)
    with pytest.raises(InputError) as raised:
        validate_chunks(path, text_field)
    message = str(raised.value)
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("name", ["malformed", "duplicate_id", "missing_content", "summary_missing", "jsonl_bad_line"])
def test_workflow_stops_before_the_model_and_writes_nothing(workflow, name):
    path, text_field, words = write_bad(workflow.path("data"), name)
    workflow.update_config(chunks=f"data/{path.name}", text_field=text_field)
    done = workflow.snakemake(check=False)
    assert done.returncode != 0
    log = workflow.path("results/logs/embed/minilm.log").read_text()
    for word in words:
        assert word in log, (word, log)
    assert "Traceback" not in log
    assert "loading" not in log  # the model was never loaded
    assert not list(workflow.path("results/embeddings").glob("*"))  # not even a temporary file


def test_good_file_summary(tmp_path):
    path = write_chunks(tmp_path / "chunks.jsonl", [dict(GOOD, id=i) for i in range(5)])
    summary = validate_chunks(path, "summary")
    assert summary.count == 5 and len(summary.sha256) == 64
    chunks = list(iter_chunks(path, "summary", [1, 3]))
    assert [(c.id, c.position, c.text) for c in chunks] == [("1", 1, "first"), ("3", 3, "first")]


def test_selection():
    assert select_positions(10, None) is None
    assert select_positions(10, 20) is None
    assert select_positions(10, 3, "head") == [0, 1, 2]
    sample = select_positions(100, 10, "random", seed=3)
    assert sample == sorted(sample) and len(set(sample)) == 10
    assert sample == select_positions(100, 10, "random", seed=3)
    assert sample != select_positions(100, 10, "random", seed=4)
