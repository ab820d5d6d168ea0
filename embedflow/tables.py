"""pgvector tables: names, column types, index operator classes (one place for each).

pgvector has ``vector`` (float32), ``halfvec`` (float16) and ``bit``; it has
no int8 type. HNSW and IVFFlat index at most 2,000 dims of ``vector``,
4,000 of ``halfvec`` and 64,000 of ``bit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embedflow.errors import ConfigError, UserError

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are cut silently
STAGING_SUFFIX = "__staging"
PKEY_SUFFIX = "_pkey"
INDEX_SUFFIX = "_embedding_idx"
# An index while it is built (on load's staging table, or beside the live index when the
# index rule rebuilds it), renamed to <table>_embedding_idx as it takes the old one's place.
STAGING_INDEX_SUFFIX = "__staging_idx"
# Every name made from a table's name (load's staging table and keys, the index) fits
# in 63 bytes, so PostgreSQL never cuts one: two tables never share a cut name.
DERIVED_SUFFIXES = (STAGING_SUFFIX, STAGING_SUFFIX + PKEY_SUFFIX, PKEY_SUFFIX, INDEX_SUFFIX, STAGING_INDEX_SUFFIX)
LONGEST_SUFFIX = max(DERIVED_SUFFIXES, key=len)
MAX_TABLE_BYTES = MAX_IDENTIFIER_BYTES - len(LONGEST_SUFFIX)  # 49: a 40-byte model key, _, bfloat16
REGISTRY_TABLE = "embedflow_tables"  # one row per loaded table: what was loaded, from which Parquet

INDEX_DIM_LIMITS = {"vector": 2000, "halfvec": 4000, "bit": 64000}
COLUMN_TYPES = {
    "float32": "vector",
    "float16": "halfvec",
    "bfloat16": "halfvec",  # bfloat16 values fit float16's range for unit vectors; halfvec is pgvector's 16-bit type
    "binary": "bit",
}
# metric -> (operator class suffix, distance operator)
METRICS = {
    "ip": ("ip_ops", "<#>"),
    "cosine": ("cosine_ops", "<=>"),
    "l2": ("l2_ops", "<->"),
    "hamming": ("hamming_ops", "<~>"),
}


def column_type(precision: str) -> str:
    if precision == "int8":
        raise UserError(
            "pgvector has no int8 vector type, so int8 embeddings stay in Parquet. To store "
            "smaller vectors in PostgreSQL use float16 (halfvec, half the bytes of float32) or "
            "binary (bit, 1/32 of the bytes) and list that precision instead"
        )
    try:
        return COLUMN_TYPES[precision]
    except KeyError:
        raise ConfigError(f"no pgvector column type for precision {precision!r}") from None


def check_identifier(name: str, what: str = "table name") -> str:
    if not IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid identifier: use lowercase letters, digits and _, "
            f"starting with a letter or _, at most {MAX_TABLE_BYTES} bytes"
        )
    if len(name.encode()) > MAX_TABLE_BYTES:
        raise ConfigError(
            f"{what} {name!r} is {len(name.encode())} bytes, more than {MAX_TABLE_BYTES}: PostgreSQL cuts "
            f"names at {MAX_IDENTIFIER_BYTES} bytes, and the names made from it (up to {name + LONGEST_SUFFIX!r}) "
            "must stay whole and distinct; use a shorter database.table template or model key"
        )
    return name


def table_name(template: str, model: str, precision: str) -> str:
    """The table for a model × precision, from ``database.table`` (e.g. ``{model}_{precision}``)."""
    try:
        name = template.format(model=model, precision=precision)
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(
            f"database.table {template!r} is not a valid template ({error}); "
            "it may use {model} and {precision}"
        ) from None
    return check_identifier(name)


def check_table_names(template: str, models, precisions) -> dict[str, tuple[str, str]]:
    """Every model × precision's table: valid, and one table for each (checked while planning)."""
    owners: dict[str, tuple[str, str]] = {}
    for model in models:
        for precision in precisions:
            name = table_name(template, model, precision)
            if name == REGISTRY_TABLE:
                raise ConfigError(
                    f"database.table {template!r} names {model} × {precision}'s table {name!r}, "
                    "the workflow's registry of loaded tables; choose another template"
                )
            earlier = owners.setdefault(name, (model, precision))
            if earlier != (model, precision):
                raise ConfigError(
                    f"database.table {template!r} gives {earlier[0]} × {earlier[1]} and {model} × "
                    f"{precision} the same table {name!r}; use both {{model}} and {{precision}} in it"
                )
    return owners


@dataclass(frozen=True)
class VectorColumn:
    """How a table's embedding column is stored, indexed and searched."""

    type: str  # vector | halfvec | bit
    dim: int

    @property
    def sql_type(self) -> str:
        return f"{self.type}({self.dim})"

    def index_type(self, halfvec_for_large: bool) -> str:
        """The type the index is built on: a vector over 2,000 dims is cast to halfvec."""
        if self.type == "vector" and self.dim > INDEX_DIM_LIMITS["vector"]:
            if not halfvec_for_large:
                raise ConfigError(
                    f"HNSW and IVFFlat index at most {INDEX_DIM_LIMITS['vector']} dims of vector; "
                    f"this column has {self.dim}. Set index.halfvec_for_large: true (an index on "
                    f"embedding::halfvec({self.dim})), use truncate_dim, or load float16"
                )
            return "halfvec"
        if self.dim > INDEX_DIM_LIMITS[self.type]:
            raise ConfigError(
                f"pgvector indexes at most {INDEX_DIM_LIMITS[self.type]} dims of {self.type}; "
                f"this column has {self.dim}"
            )
        return self.type

    def metric(self, configured: str) -> str:
        """bit columns are searched by Hamming distance, whatever the float metric."""
        return "hamming" if self.type == "bit" else configured

    def expression(self, index_type: str) -> str:
        """The indexed expression; queries must order by the same one to use the index."""
        return "embedding" if index_type == self.type else f"(embedding::{index_type}({self.dim}))"

    def operator_class(self, index_type: str, metric: str) -> str:
        return f"{index_type}_{METRICS[metric][0]}"


def distance_operator(metric: str) -> str:
    return METRICS[metric][1]
