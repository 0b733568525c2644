"""Architecture decision records keep Nygard's form, and the index lists exactly the records that exist."""

from __future__ import annotations

import re
from datetime import date

import pytest

from skewless.core.config import PROJECT_ROOT

ADRS = PROJECT_ROOT / "adrs"
STATUS = re.compile(r"(Proposed|Accepted|Deprecated|Superseded by \[?\d{4}\]?.*)$")


def _records() -> list:
    return sorted(ADRS.glob("[0-9][0-9][0-9][0-9]-*.md"))


@pytest.mark.parametrize("path", _records(), ids=lambda p: p.name)
def test_record_form(path):
    text = path.read_text()
    lines = text.splitlines()
    number = int(path.name[:4])
    assert re.fullmatch(rf"# {number}\. \S.*", lines[0]), f"{path.name}: title must be '# {number}. <title>'"
    dated = re.search(r"^Date: (\d{4}-\d{2}-\d{2})$", text, re.M)
    assert dated, f"{path.name}: no 'Date: YYYY-MM-DD' line"
    date.fromisoformat(dated[1])
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads == ["Status", "Context", "Decision", "Consequences"], f"{path.name}: sections {heads}"
    status = text.split("## Status", 1)[1].split("## Context", 1)[0].strip()
    assert STATUS.fullmatch(status), f"{path.name}: status {status!r}"


def test_index_lists_every_record_and_only_records_that_exist():
    index = (ADRS / "README.md").read_text()
    linked = set(re.findall(r"\]\((\d{4}-[^)]+\.md)\)", index))
    present = {p.name for p in _records()}
    assert present <= linked, f"records missing from adrs/README.md: {sorted(present - linked)}"
    assert linked <= present, f"adrs/README.md links records that do not exist: {sorted(linked - present)}"
    numbers = sorted(int(n[:4]) for n in present)
    assert numbers == list(range(1, len(numbers) + 1)), f"numbers are not consecutive from 1: {numbers}"
