"""Bad chunks files: one clear message naming file, chunk and problem; no output."""

from __future__ import annotations

import json

import pytest

from conftest import write_chunks
from embedflow.chunks import iter_chunks, iter_records, records_at, select_positions, validate_chunks
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
    log = workflow.path("results/logs/preflight.log").read_text()  # validated before any model job
    for word in words:
        assert word in log, (word, log)
    assert "Traceback" not in log and "Traceback" not in done.stdout + done.stderr
    assert not workflow.path("results/logs/embed").exists()  # no model job started
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


# --- what the chain cannot store, encodings, the skip policy ---------------------------

# (file text, words the message must contain); JSON escapes put NUL and surrogates in the file.
UNSTORABLE = {
    "nul_in_content": ('[{"id": "a", "content": "x\\u0000y"}]',
                       ["chunk #1 (id 'a'): 'content' contains a NUL character (U+0000) at character 2"]),
    "nul_in_summary": ('[{"id": "a", "content": "x", "summary": "\\u0000"}]', ["'summary' contains a NUL character"]),
    "nul_in_id": ('[{"id": "a\\u0000", "content": "x"}]', ["chunk #1: 'id' contains a NUL character"]),
    "surrogate_in_content": ('[{"id": "a", "content": "x\\ud800"}]',
                             ["'content' contains a lone surrogate (U+D800) at character 2"]),
    "surrogate_in_id": ('[{"id": "\\udfff", "content": "x"}]', ["'id' contains a lone surrogate (U+DFFF)"]),
    "nul_in_metadata_value": ('[{"id": "a", "content": "x", "source": {"url": "a\\u0000"}}]',
                              ["(id 'a'): metadata 'source.url' contains a NUL character"]),
    "nul_in_metadata_key": ('[{"id": "a", "content": "x", "source": {"u\\u0000": 1}}]',
                            ["metadata key 'u\\x00' in 'source' contains a NUL character"]),
    "surrogate_in_top_level_key": ('[{"id": "a", "content": "x", "\\ud800": 1}]',
                                   ["metadata key '\\ud800' contains a lone surrogate"]),
    "nan": ('[{"id": "a", "content": "x", "score": NaN}]', ["metadata 'score' is NaN, which JSON"]),
    "infinity_in_a_list": ('[{"id": "a", "content": "x", "tags": [1, -Infinity]}]', ["metadata 'tags[1]' is -Infinity"]),
    "overflowing_number": ('[{"id": "a", "content": "x", "n": 1e999}]', ["metadata 'n' is Infinity"]),
    "huge_integer": ('[{"id": "a", "content": "x", "n": ' + "9" * 5000 + "}]",
                     ["not valid JSON: an integer with more than 4,300 digits"]),
    "too_deep_to_read": ('[{"id": "a", "content": "x", "n": ' + "[" * 5000 + "]" * 5000 + "}]",
                         ["not valid JSON: nested deeper than the JSON reader allows"]),
}


@pytest.mark.parametrize("name", sorted(UNSTORABLE))
def test_what_the_chain_cannot_store_is_refused_by_name(tmp_path, name):
    text, words = UNSTORABLE[name]
    path = tmp_path / "chunks.json"
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        validate_chunks(path)
    message = str(raised.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (word, message)
    message.encode("utf-8")  # never a raw surrogate: the log must be able to hold it


def test_an_emoji_escaped_as_a_surrogate_pair_is_one_valid_character(tmp_path):
    path = tmp_path / "chunks.json"
    path.write_text('[{"id": "a", "content": "x \\ud83d\\ude00", "note": "\\ud83d\\ude00"}]')
    assert validate_chunks(path).count == 1
    assert next(iter_chunks(path)).text == "x \U0001F600"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, suffix):
    path = write_chunks(tmp_path / f"chunks{suffix}", [dict(GOOD, id=i) for i in range(3)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert validate_chunks(path).count == 3
    assert [chunk.id for chunk in iter_chunks(path)] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "codec, named, iconv_name",
    [("utf-16", "UTF-16 little-endian (with a byte-order mark)", "UTF-16LE"),
     ("utf-16-be", "UTF-16 big-endian (without a byte-order mark)", "UTF-16BE"),
     ("utf-16-le", "UTF-16 little-endian (without a byte-order mark)", "UTF-16LE"),
     ("utf-32", "UTF-32 little-endian (with a byte-order mark)", "UTF-32LE"),
     ("utf-32-be", "UTF-32 big-endian (without a byte-order mark)", "UTF-32BE")],
)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_utf16_and_utf32_are_named_with_how_to_convert(tmp_path, codec, named, iconv_name, suffix):
    path = tmp_path / f"chunks{suffix}"
    path.write_bytes(json.dumps([GOOD] if suffix == ".json" else GOOD).encode(codec))
    with pytest.raises(InputError) as raised:
        validate_chunks(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: the file is {named}, not UTF-8"), message
    converted = tmp_path / f"chunks.utf8{suffix}"
    assert f"`iconv -f {iconv_name} -t UTF-8 {path} > {converted}`" in message
    assert f"`Get-Content {path} | Set-Content -Encoding utf8 {converted}`" in message


def test_the_converted_file_is_accepted(tmp_path):
    import shlex
    import shutil
    import subprocess

    if shutil.which("iconv") is None:
        pytest.skip("no iconv on this machine")
    source = tmp_path / "chunks.json"
    source.write_bytes(json.dumps([GOOD]).encode("utf-16"))
    with pytest.raises(InputError) as raised:
        validate_chunks(source)
    command = str(raised.value).split("`")[1]  # the iconv command the message gives
    argv, target = command.split(" > ")
    with open(target, "wb") as output:
        subprocess.run(shlex.split(argv), stdout=output, check=True)
    assert validate_chunks(tmp_path / "chunks.utf8.json").count == 1


BAD_LINES = (
    '{"id": "a", "content": "first"}\n'
    '{"id": "b", "content": "\\u0000"}\n'  # NUL
    '\n'
    '{"id": "c", "content": }\n'  # not JSON
    '{"id": "a", "content": "again"}\n'  # duplicate id
    '{"id": "d", "content": "fine", "score": NaN}\n'
    '{"id": "e", "content": "last"}\n'
)


def test_skip_collects_every_bad_chunk_with_position_line_id_and_reason(tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(BAD_LINES.encode() + b"\xff\xfe\n")
    with pytest.raises(InputError, match=r"line 2: chunk #2 \(id 'b'\): 'content' contains a NUL"):
        validate_chunks(path)
    summary = validate_chunks(path, on_bad_chunk="skip")
    assert summary.count == 2
    assert [(r["position"], r["line"], r["id"]) for r in summary.rejected] == [
        (1, 2, "b"), (2, 4, None), (3, 5, "a"), (4, 6, "d"), (6, 8, None)]
    assert summary.rejected[1]["reason"].startswith("not valid JSON at column 24")
    assert summary.rejected[2]["reason"] == "duplicate id 'a' at chunk #1 and chunk #4 (ids are compared as text)"
    assert summary.rejected[4]["reason"].startswith("not valid UTF-8 (byte 0xff")
    skip = {r["position"] for r in summary.rejected}
    assert [c.id for c in iter_chunks(path, skip=skip)] == ["a", "e"]
    assert validate_chunks(path, skip=skip).count == 2  # what embed does with the rejected positions
    with pytest.raises(InputError, match="not valid JSON at column 24"):
        list(iter_chunks(path, skip=skip - {2}))


def test_test_mode_selects_among_the_accepted_chunks(tmp_path):
    skip = {0, 3, 4}
    assert select_positions(5, 3, "head", skip=skip) == [1, 2, 5]
    assert select_positions(5, 5, "head", skip=skip) is None
    sample = select_positions(50, 10, "random", seed=1, skip=skip)
    assert not set(sample) & skip and sample == sorted(sample)


def test_a_file_of_only_bad_chunks_is_refused_even_with_skip(tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "content": ""}\n')
    with pytest.raises(InputError, match="none of its 2 chunks can be embedded; the first: has no 'content'"):
        validate_chunks(path, on_bad_chunk="skip")


def test_the_load_reader_finds_the_records_iter_chunks_finds_and_reads_them_again_by_place(tmp_path):
    records = [{"id": f"c{i}", "content": f"text {i}", "n": i} for i in range(6)]
    # a BOM, blank lines (one of ideographic space, one of an ASCII separator str.strip takes)
    lines = [json.dumps(r) for r in records]
    text = "\ufeff" + "\n".join(lines[:2] + ["", "\u3000", "\x1c"] + lines[2:]) + "\n\n"
    jsonl = tmp_path / "chunks.jsonl"
    jsonl.write_text(text, encoding="utf-8")
    array = write_chunks(tmp_path / "chunks.json", records)
    for path in (jsonl, array):
        skip = {1, 4}
        expected = [chunk.record for chunk in iter_chunks(path, skip=skip)]
        found = list(iter_records(path, skip))
        assert [record for _, record in found] == expected == [r for i, r in enumerate(records) if i not in skip]
        places = [place for place, _ in found]
        assert records_at(path, places[::-1]) == dict(found)


def test_the_load_reader_names_the_file_when_a_record_is_no_longer_a_chunk(tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_text('{"id": "a", "content": "x"}\n{"content": "no id"}\n')
    with pytest.raises(InputError, match=r"chunks.jsonl: chunk #2 is not a chunk object with an 'id'"):
        list(iter_records(path))
    assert [record["id"] for _, record in iter_records(path, skip={1})] == ["a"]
    with pytest.raises(InputError, match=r"chunks.jsonl: the chunk at byte 28 is not"):
        records_at(path, [28])
