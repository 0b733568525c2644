"""Feast extensions of skewless (plugged in by class path from ``feature_repo/feature_store*.yaml``)."""
