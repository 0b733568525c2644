"""The feature catalogue, generated from the Feast registry so that the README cannot drift from it."""

from __future__ import annotations

from skewless.core.config import Profile


def markdown(p: Profile | None = None) -> str:
    """Markdown tables of every feature view's features: name, type, meaning, owner, freshness target.

    Generated from the objects ``feast apply`` registers (parsed from ``feature_repo/``), so it needs no lakehouse.
    """
    from skewless.ops.feast_ops import repo_contents

    repo = repo_contents(p)
    out = []
    for fv in sorted(repo.feature_views, key=lambda v: v.name):
        slo_h = int(fv.tags.get("freshness_slo_seconds", "0")) / 3600
        entities = ", ".join(f"`{e}`" for e in fv.entities)
        out.append(f"### `{fv.name}` (entity {entities}, TTL {fv.ttl or 'none'})\n")
        out.append(f"{fv.description}\n")
        out.append("| feature | type | meaning | owner | freshness target |")
        out.append("|---|---|---|---|---|")
        for f in fv.features:
            target = (f"{slo_h:g} h for {float(fv.tags.get('freshness_objective', 0)):.0%} of "
                      f"{fv.tags.get('freshness_window_days')} days" if "freshness_slo_seconds" in fv.tags else
                      "evaluated at read time from streamed events; no SLO declared yet")
            out.append(f"| `{f.name}` | {f.dtype} | {f.description} | {fv.owner} | {target} |")
        out.append("")
    for fs in sorted(repo.feature_services, key=lambda s: s.name):
        refs = ", ".join(f"`{p.name}:{f.name}`" for p in fs.feature_view_projections for f in p.features)
        out.append(f"- service `{fs.name}` ({fs.owner}): {fs.description} Features: {refs}")
    return "\n".join(out)


BEGIN = "<!-- feature-catalogue:begin"
END = "<!-- feature-catalogue:end -->"


def readme_section(readme: str) -> str:
    """The generated catalogue as it stands in a README (between the markers)."""
    start = readme.index("\n", readme.index(BEGIN)) + 1
    return readme[start:readme.index(END)].strip("\n")


def write_readme(path, p: Profile | None = None) -> None:
    """Replace the catalogue between the markers of ``path`` with the generated one."""
    from pathlib import Path

    readme = Path(path).read_text()
    start = readme.index("\n", readme.index(BEGIN)) + 1
    Path(path).write_text(readme[:start] + markdown(p) + "\n" + readme[readme.index(END):])
