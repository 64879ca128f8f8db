"""docs/limits.md is what scripts/limits_table.py makes from the enforcing modules' constants."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_limits_page_matches_the_code():
    spec = importlib.util.spec_from_file_location(
        "limits_table", ROOT / "scripts" / "limits_table.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    assert page == script.table(), "run: python scripts/limits_table.py --out docs/limits.md"
    assert len(script.rows()) >= 30
