"""Stage ``verify``: proves an embeddings file sound before it reaches the database.

Two steps, two rules:

* ``measure_embeddings`` (rule ``measure``, ``verify.measure``) reads
  ``embeddings_<model>_<precision>.parquet`` with the chunks file, the embed
  provenance, the probes file of the model (rule ``probe``) and, for a derived
  precision, the float32 file it was made from. It returns a ``Report`` whose
  checks hold a measured value and how to judge it (which threshold), plus a
  spot check that a person reads; the rule keeps it as
  ``<model>_<precision>.measures.json``.
* ``judge`` (rule ``verify``, ``verify.verdict``) applies the configured
  thresholds: each check gets a status (``pass`` | ``warn`` | ``fail``) and its
  threshold. The rule writes the report as JSON and Markdown when nothing
  fails; when a check fails it logs the failing checks and the whole report and
  fails the job, so no report exists and nothing downstream of that model x
  precision runs.

Moving a threshold reruns the judging only: it reads a small JSON file, never
the embeddings, and never needs the float32 file (which is ``temp()`` when
float32 is not a configured precision, and would otherwise be made again).
``verify_embeddings`` does both steps in one call.

The modules: ``report`` (the check model, ``judge``, ``Report``, the settings),
``fingerprints`` (ids and text hashes, the selected chunks), ``passes`` (the
two streaming passes, bounded memory), one module per family of checks
(``file_checks``: provenance, metadata, layout, dim; ``id_checks``: ids and
text hashes; ``vector_checks``; ``decode_checks``: decode and drift;
``neighbour_checks``: neighbours and the spot check; ``model_checks``: the
model and its adapter), ``markdown`` (the report for people), and the two rule
entries ``measure`` and ``verdict``.
"""

from embedflow.vectors import RunningTopK as TopK  # the name verify gave its running top-k
from embedflow.verify.fingerprints import (
    ChunkSelection,
    Fingerprints,
    chunk_fingerprints,
    hash_fingerprints,
    id_fingerprints,
    ids_at_positions,
)
from embedflow.verify.markdown import checks_table, render_markdown
from embedflow.verify.measure import measure_embeddings, verify_embeddings
from embedflow.verify.neighbour_checks import texts_at_positions
from embedflow.verify.passes import aligned
from embedflow.verify.report import (
    FAIL,
    PASS,
    WARN,
    Check,
    Report,
    VerifySettings,
    at_least,
    at_most,
    equals,
    judge,
    none_of,
    worst,
)
from embedflow.verify.verdict import run

__all__ = [
    "FAIL",
    "PASS",
    "WARN",
    "Check",
    "ChunkSelection",
    "Fingerprints",
    "Report",
    "TopK",
    "VerifySettings",
    "aligned",
    "at_least",
    "at_most",
    "checks_table",
    "chunk_fingerprints",
    "equals",
    "hash_fingerprints",
    "id_fingerprints",
    "ids_at_positions",
    "judge",
    "measure_embeddings",
    "none_of",
    "render_markdown",
    "run",
    "texts_at_positions",
    "verify_embeddings",
    "worst",
]
