"""The vector cache: a vector is encoded once per (encoder identity, exact text).

See docs/cache.md. ``VectorCache(path).namespace(encoder_identity(spec))`` gives the
entries of one encoder; ``get`` and ``put`` read and add them; ``run_lock`` is the
lock embed holds (shared) and prune takes (exclusive). No torch, no pyarrow.
"""

from embedflow.cache.lock import CacheBusy, run_lock
from embedflow.cache.store import Namespace, VectorCache

__all__ = ["CacheBusy", "Namespace", "VectorCache", "run_lock"]
