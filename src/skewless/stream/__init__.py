"""Stage 2b — the fresh path: commit events pushed to an intake, kept in a durable log and applied by the stream
processor to the online store and the lake within seconds (ADR 0015, ADR 0016)."""
