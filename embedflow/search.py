"""Nearest-neighbour queries on a loaded table: the one place that writes them.

Used by the index stage (recall against exact search), by ``embedflow
search`` and by evaluation, so that all three ask PostgreSQL the same
question. A query orders by the indexed expression, so the planner can use
the index; ``exact=True`` switches index scans off for the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedflow.tables import VectorColumn, distance_operator


@dataclass(frozen=True)
class SearchPlan:
    """How a table is searched: what the index covers and how candidates are re-ranked."""

    column: VectorColumn
    index_type: str  # the type the index is on (halfvec for a cast large vector)
    metric: str  # ip | cosine | l2 | hamming
    binary_quantize: bool = False  # candidates by Hamming distance of binary_quantize(), re-ranked
    rerank_candidates: int = 100

    @property
    def expression(self) -> str:
        if self.binary_quantize:
            return f"(binary_quantize(embedding)::bit({self.column.dim}))"
        return self.column.expression(self.index_type)

    @property
    def operator(self) -> str:
        return distance_operator("hamming" if self.binary_quantize else self.metric)


def query_value(column: VectorColumn, vector: np.ndarray):
    """A query vector as the pgvector object for the column's type."""
    from pgvector import Bit, HalfVector

    if column.type == "bit":
        bits = vector if vector.dtype == np.bool_ else vector > 0
        return Bit(bits.astype(bool))
    if column.type == "halfvec":
        return HalfVector(vector.astype(np.float32))
    return vector.astype(np.float32)


def search_sql(plan: SearchPlan, table: str, exact: bool = False):
    """SQL returning (id, distance, content) for the k nearest rows of %(query)s."""
    from psycopg import sql

    column = plan.column
    cast = f"::{column.type}({column.dim})"
    query = sql.SQL("%(query)s" + cast)
    if exact or not plan.binary_quantize:
        expression = sql.SQL("embedding" if exact else plan.expression)
        operator = distance_operator(plan.metric)
        if not exact and plan.index_type != column.type:
            query = sql.SQL(f"%(query)s{cast}::{plan.index_type}({column.dim})")
        return sql.SQL(
            "SELECT id, {expression} {operator} {query} AS distance, content FROM {table} "
            "ORDER BY {expression} {operator} {query} LIMIT %(k)s"
        ).format(expression=expression, operator=sql.SQL(operator), query=query, table=sql.Identifier(table))
    quantized = sql.SQL(f"binary_quantize(%(query)s{cast})::bit({column.dim})")
    full = sql.SQL(distance_operator(plan.metric))
    return sql.SQL(
        "SELECT id, embedding {full} {query} AS distance, content FROM ("
        "SELECT id, embedding, content FROM {table} "
        "ORDER BY {expression} <~> {quantized} LIMIT %(candidates)s) AS candidates "
        "ORDER BY embedding {full} {query} LIMIT %(k)s"
    ).format(
        full=full, query=query, table=sql.Identifier(table), expression=sql.SQL(plan.expression), quantized=quantized
    )


def score(metric: str, distance: float) -> float:
    """pgvector distances → a score where higher is closer (ip: <#> is the negative inner product)."""
    if metric == "ip":
        return -distance
    if metric == "cosine":
        return 1 - distance
    return -distance


EXACT_SETTINGS = {"enable_indexscan": "off", "enable_bitmapscan": "off"}


def search(
    connection,
    plan: SearchPlan,
    table: str,
    vector: np.ndarray,
    k: int = 10,
    exact: bool = False,
    settings: dict | None = None,
) -> list[tuple]:
    """[(id, distance, content)] for one query vector, in a transaction of its own so
    that ``settings`` (e.g. ``{"hnsw.ef_search": 100}``) apply to this query only."""
    settings = {**(settings or {}), **(EXACT_SETTINGS if exact else {})}
    params = {"query": query_value(plan.column, vector), "k": k, "candidates": max(k, plan.rerank_candidates)}
    with connection.transaction(), connection.cursor() as cursor:
        for name, value in settings.items():
            cursor.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
        return cursor.execute(search_sql(plan, table, exact), params).fetchall()
