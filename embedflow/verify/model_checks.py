"""Checks of the model: the configured model still gives the stored float32 rows
(``model_reproduces``), and a configured adapter was applied and changes the vectors."""

from __future__ import annotations

import numpy as np

from embedflow.embeddings_file import EmbeddingsMetadata
from embedflow.probes_file import Probes
from embedflow.vectors import row_cosines
from embedflow.verify.passes import Figures
from embedflow.verify.report import Report, VerifySettings, at_least, at_most, equals


def model_checks(report: Report, settings: VerifySettings, probe: Probes, acc: Figures, embed_record: dict,
                 meta: EmbeddingsMetadata) -> None:
    add = report.checks.append
    documents = probe.select("document")
    compared = [
        (chunk_id, vector)
        for chunk_id, vector, is_doc in zip(probe.ids, probe.vectors, documents)
        if is_doc and chunk_id in acc.doc_vectors
    ]
    if not compared:
        report.not_run.append({"name": "model_reproduces", "reason": "no re-encoded chunk in the probes file "
                               "lines up with a float32 row (verify.reencode_rows: 0?)"})
    elif probe.dim != meta.dim:
        report.not_run.append({"name": "model_reproduces", "reason": f"the model gives {probe.dim} dims, "
                               f"the file has {meta.dim}"})
    else:
        cosines, _ = row_cosines(np.vstack([v for _, v in compared]), np.vstack([acc.doc_vectors[i] for i, _ in compared]))
        cosines = np.nan_to_num(cosines, nan=-1.0)
        lowest = int(np.argmin(cosines))
        add(at_least("model_reproduces", float(cosines.min()), "model_reproduces",
                     f"{len(compared)} chunks re-encoded by the configured model (rule probe) against their "
                     f"stored float32 rows: min cosine (at id {compared[lowest][0]!r}), mean {cosines.mean():.6f}"))
    if settings.model.get("adapter"):
        applied_probe = bool(probe.info.get("adapter_applied"))
        applied_embed = bool(embed_record.get("model", {}).get("adapter_applied"))
        if not (applied_probe and applied_embed) or probe.without_adapter is None:
            add(equals("adapter", "not applied", "applied",
                      f"adapter {settings.model['adapter']}: applied by embed: {applied_embed}; "
                      f"by probe: {applied_probe}"))
        else:
            cosines, _ = row_cosines(probe.vectors, probe.without_adapter)
            cosines = np.nan_to_num(cosines, nan=1.0)
            add(at_most("adapter", float(cosines.max()), "adapter_max_cosine",
                        f"cosine of {len(cosines)} probe texts with / without adapter {settings.model['adapter']}: "
                        f"max (the least changed) shown, mean {cosines.mean():.6f}, min {cosines.min():.6f}"))
