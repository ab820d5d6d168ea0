"""embedflow: the library behind the embedding workflow.

One module per stage (``embed``, ``convert``, ``probe`` and ``verify``,
``load``, ``index``, ``encode_queries``, ``evaluate``, ``summary``), with the
shared pieces beside them: ``chunks`` (reading and validating the corpus),
``encoder`` (models, devices, compute precision), ``precision`` (the dtype map
and the casts), ``embeddings_file`` (the Parquet contract), ``database``,
``tables`` and ``search`` (pgvector), ``metrics`` and ``provenance``; ``cli``
is the command line (``embedflow search | check | psql``).
Importing the package is cheap: torch is imported only by ``encoder``.
"""

__version__ = "0.1.0"
