"""Layer 4 — ops: what operators and the serving path run over the Feast store: apply/plan/materialize,
the online read path, parity, freshness, status, lineage, the feature guard."""
