"""Which configuration to serve: rules ``sweep`` and ``decision`` (docs/decision.md).

``sweep`` (``embedflow.decision.sweep``) measures every servable index × search
setting of one loaded table through real SQL; ``decision``
(``embedflow.decision.report``) ranks them all against the config's budgets,
with extrapolations to the target size (``embedflow.decision.sizing``), a
paired bootstrap (``embedflow.decision.choose``) and the DDL to paste
(``embedflow.decision.candidates``).
"""
