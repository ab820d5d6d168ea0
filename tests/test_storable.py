"""Validation accepts a chunk exactly when the whole chain can store it, proven by property.

Hypothesis writes one-chunk files with arbitrary Unicode (NUL and surrogates
included) in the id, the text and the metadata's keys and values, and
arbitrary JSON-like metadata (NaN, the infinities, big integers, nesting).
Each chunk then goes through the chain without validation, as embed and load
would take it: the tiny model encodes its text, the embeddings Parquet is
written, and ``load_table`` copies it into the real embedded PostgreSQL. The
property: ``validate_chunks`` accepts the file if and only if that succeeds,
and what the table then holds equals the file's chunk.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from embedflow.chunks import TEXT_COLUMNS, validate_chunks
from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
from embedflow.errors import InputError
from embedflow.hashing import sha256_text
from embedflow.load import load_table

TABLE = "storable_probe"

# Any code point; one in 15 is one the chain refuses or one near such a case.
odd_characters = st.one_of(st.integers(0xD800, 0xDFFF).map(chr), st.sampled_from("\x00\ufeff\u2028\x7f \t\n\"\\"))
characters = st.integers(0, 14).flatmap(lambda n: odd_characters if n == 0 else st.characters())
texts = st.text(characters, max_size=12)
non_blank = st.text(characters, min_size=1, max_size=12).filter(lambda text: text.strip())
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=10**400),
    st.floats(),  # NaN and the infinities included
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
chunks = st.fixed_dictionaries(
    {
        # Ids and texts of the shape the policy asks for (non-blank), so that storing
        # is the only thing left to decide.
        "id": st.one_of(non_blank, st.integers()),
        "content": non_blank,
    },
    optional={"summary": st.one_of(st.none(), texts)},
).flatmap(
    lambda chunk: st.dictionaries(texts.filter(lambda key: key not in TEXT_COLUMNS), json_values, max_size=3).map(
        lambda metadata: {**chunk, **metadata}
    )
)


@pytest.fixture(scope="module")
def chain(embedded_db, tiny_model, tmp_path_factory):
    from embedflow.database import connect
    from embedflow.encoder import load_encoder

    spec = {
        "source": str(tiny_model), "revision": None, "adapter": None, "truncate_dim": None,
        "document_prompt": None, "query_prompt": None, "max_seq_length": None, "batch_size": 8,
        "compute_precision": "float32", "normalize": True, "trust_remote_code": False,
    }
    encoder = load_encoder("tiny", spec, "cpu", False)
    with connect(embedded_db) as connection:
        yield encoder, connection, tmp_path_factory.mktemp("storable")


def store(chain, chunk: dict, chunks_path) -> tuple:
    """The chain without validation: encode, write the Parquet, load. Returns the stored row."""
    encoder, connection, folder = chain
    text = chunk["content"]
    vectors = encoder.encode([text], None, 1)
    meta = EmbeddingsMetadata("tiny", "tiny", encoder.dim, "float32", True, "float32", "content", "0" * 64)
    parquet = folder / "embeddings.parquet"
    with EmbeddingsWriter(parquet, meta) as writer:
        writer.write([str(chunk["id"])], vectors, [sha256_text(text)])
    load_table(connection, TABLE, parquet, chunks_path)
    return connection.execute(f"SELECT id, content, summary, metadata FROM {TABLE}").fetchone()


def stores(chain, chunk: dict, chunks_path) -> tuple[bool, object]:
    encoder, connection, folder = chain
    try:
        return True, store(chain, chunk, chunks_path)
    except Exception as error:  # any refusal anywhere in the chain
        if not connection.closed and connection.info.transaction_status != 0:
            connection.rollback()
        return False, error


def as_json(value):
    """A value as JSON means it: numbers by their decimal value (jsonb keeps 4.715477282305141e16
    as the numeric 47154772823051410, which reads back as an int)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return {key: as_json(item) for key, item in value.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=chunks)
def test_validation_accepts_exactly_what_the_chain_stores(chain, chunk):
    folder = chain[2]
    path = folder / "chunks.jsonl"
    # As a user's file holds it: JSON with \u escapes, so that NUL and surrogates can be in it.
    path.write_text(json.dumps(chunk, ensure_ascii=True) + "\n", encoding="utf-8")
    try:
        validate_chunks(path)
        accepted, refusal = True, None
    except InputError as error:
        accepted, refusal = False, str(error)
    stored, row = stores(chain, json.loads(path.read_text()), path)
    event("stored" if stored else f"refused by the chain: {type(row).__name__}")
    assert accepted == stored, (chunk, refusal, row)
    if accepted:
        record = json.loads(path.read_text())
        metadata = {key: value for key, value in record.items() if key not in TEXT_COLUMNS}
        assert row[:3] == (str(record["id"]), record["content"], record.get("summary"))
        assert as_json(row[3]) == as_json(metadata)
    else:
        assert refusal.startswith(f"{path}, line 1: chunk #1"), refusal


def nested(levels: int):
    value: object = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_metadata_as_deep_as_allowed_is_stored_and_deeper_is_refused(chain):
    from embedflow.storable import MAX_DEPTH

    path = chain[2] / "deep.jsonl"
    chunk = {"id": "deep", "content": "text", "tree": nested(MAX_DEPTH)}
    path.write_text(json.dumps(chunk) + "\n")
    validate_chunks(path)
    stored, row = stores(chain, chunk, path)
    assert stored and row[3] == {"tree": nested(MAX_DEPTH)}, row
    path.write_text(json.dumps({**chunk, "tree": nested(MAX_DEPTH + 1)}) + "\n")
    with pytest.raises(InputError, match=rf"line 1: chunk #1 \(id 'deep'\): metadata 'tree\[0\]\[0\].*' is nested more than {MAX_DEPTH} levels deep"):
        validate_chunks(path)
