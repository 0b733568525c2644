"""Drills: what goes wrong without the platform, measured (never imported by serving/ or training/)."""
