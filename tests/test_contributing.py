"""CONTRIBUTING.md's layout table names every module of the packages, and only modules
that exist: a module added or removed without its row fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rnn_export", "rnn_export/parity", "rnn_export/cli", "runtime/rnn_runtime")


def _layout_paths() -> set[str]:
    """The file paths in the first column of the Layout table: `dir/a.py`, `b.py` is
    dir/a.py and dir/b.py (a bare name takes the folder of the path before it)."""
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    table = text[text.index("## Layout") :].split("\n## ", 1)[0]
    paths, folder = set(), ""
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
                name = name.rsplit("/", 1)[1]
            if name.endswith(".py"):
                paths.add(folder + name)
    return paths


def test_the_layout_table_names_every_module_of_the_packages():
    modules = {str(f.relative_to(REPO)) for p in PACKAGES for f in (REPO / p).glob("*.py")}
    named = _layout_paths()
    assert sorted(modules - named) == [], "modules without a row in CONTRIBUTING.md's Layout"
    assert sorted(p for p in named if not (REPO / p).is_file()) == [], "rows of no module"
