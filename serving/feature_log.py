"""The serving log: the features the predictor actually served, one JSON line per answered instance.

Written to ``SKEWLESS_HOME/serving_log/<model>/<UTC day>.jsonl`` (one file per model and request day, so a
window is a set of files). Each line::

    {"ts": "2026-11-22T04:10:00.123456+00:00", "model": "next_week_commits", "model_version": "3",
     "feature_service": "next_week_commits_v1", "skew": null, "repo": "owner/name",
     "features": {"commits_last_7d": 12, ...} | null, "prediction": 13.2 | null, "error": null | "..."}

``skew`` names the drill skew that was active (null in normal operation). The log is what drift and skew
checks compare with the training set (:func:`read`); it holds repository names and aggregate counts only.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

from skewless.core.config import Profile, profile


def log_dir(p: Profile | None = None) -> Path:
    """The serving-log directory of a profile's home."""
    return (p or profile()).home / "serving_log"


def _clean(v):
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):  # numpy scalar
        v = v.item()
        if isinstance(v, float) and math.isnan(v):
            return None
    return v


class FeatureLog:
    """Append-only JSONL writer, safe to share between threads; one open-append-close per request batch."""

    def __init__(self, model: str, p: Profile | None = None):
        self.model = model
        self.directory = log_dir(p) / model
        self._lock = threading.Lock()

    def path_for(self, day: date) -> Path:
        return self.directory / f"{day.isoformat()}.jsonl"

    def write(self, records: Iterable[dict], now: datetime | None = None) -> None:
        """Append one line per record (``ts`` and ``model`` are added; NaN becomes null)."""
        now = now or datetime.now(timezone.utc)
        ts = now.isoformat()
        lines = []
        for r in records:
            rec = {"ts": ts, "model": self.model, **r}
            if rec.get("features") is not None:
                rec["features"] = {k: _clean(v) for k, v in rec["features"].items()}
            rec["prediction"] = _clean(rec.get("prediction"))
            lines.append(json.dumps(rec, separators=(",", ":")))
        if not lines:
            return
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path_for(now.date()).open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")


def read(model: str, p: Profile | None = None, since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """The serving log of ``model`` as a DataFrame: one row per served instance, one column per served feature.

    ``since``/``until`` bound the request days (inclusive). Columns: ts, model, model_version, feature_service,
    skew, repo, prediction, error and the features (null where the instance got an error).
    """
    directory = log_dir(p) / model
    rows = []
    for f in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        day = date.fromisoformat(f.stem)
        if (since and day < since) or (until and day > until):
            continue
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    feats = rec.pop("features", None) or {}
                    rows.append({**rec, **feats})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")  # now() omits zero microseconds
    return df
