"""Data shipped with skewless: a small sample of the real commit events, so a fresh clone runs and tests."""

from pathlib import Path

#: 7,420 commits of 6 repositories (the columns of shared/data/commits/README.md), through 2026-08-22.
SAMPLE_COMMITS = Path(__file__).parent / "sample_commits.parquet"
