"""Every Python and shell snippet of README.md and docs/*.md runs as written.

Fenced ```python blocks run each as its own script (`python snippet.py`); in ```console
and ```bash blocks every line starting with `$ ` is a command (a line ending in `\\`
continues on the next), the other lines are the output a user sees and are not checked.
The snippets of one file run in order, in one fresh temporary folder that stands for
the repository root of a user's clone (it holds a link to `scripts/`), with this
interpreter's folder first on PATH (so `python` and `rnn-export` are the installed ones);
every one must exit 0.

A block preceded by `<!-- snippet: not run: REASON -->` is skipped. The mark is for
the few snippets that cannot run inside the suite: the set-up commands (they install the
package and run the whole suite, which would run this test again), the full main job
(two minutes; tests/test_demo.py runs it), a command that needs a GPU, and a default
size training. A shell or Python block without the mark and without any command fails
the test, so a snippet cannot drop out of the check by losing its prompts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUN_LANGS = {"python", "console", "bash"}
NOT_RUN = re.compile(r"<!--\s*snippet:\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
TIMEOUT_S = 600


@dataclass(frozen=True)
class Snippet:
    """One fenced block: its language, first line number, text and skip reason (if marked)."""

    lang: str
    line: int
    text: str
    skip: str | None


def extract_snippets(markdown: str) -> list[Snippet]:
    """The fenced blocks of a Markdown text whose language is python, console or bash."""
    snippets = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        lang = m.group(1)
        if lang in RUN_LANGS:
            before = next((x for x in reversed(lines[:start]) if x.strip()), "")
            mark = NOT_RUN.search(before)
            text = "\n".join(lines[start + 1 : j]) + "\n"
            snippets.append(Snippet(lang, start + 1, text, mark.group(1) if mark else None))
        i = j + 1
    return snippets


def shell_commands(text: str) -> list[str]:
    """The `$ ` lines of a console block, continuation lines joined."""
    commands: list[str] = []
    pending: str | None = None
    for raw in text.splitlines():
        if pending is not None:
            pending += "\n" + raw
            if not raw.endswith("\\"):
                commands.append(pending)
                pending = None
        elif raw.startswith("$ "):
            line = raw[2:]
            if line.endswith("\\"):
                pending = line
            else:
                commands.append(line)
    if pending is not None:
        commands.append(pending)
    return commands


def run_snippets(path: Path, workdir: Path) -> list[str]:
    """Run a Markdown file's snippets in order in `workdir`; returns one line per failure."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    failures = []
    for n, snippet in enumerate(extract_snippets(path.read_text(encoding="utf-8"))):
        if snippet.skip is not None:
            continue
        where = f"{path.name}:{snippet.line} ({snippet.lang})"
        if snippet.lang == "python":
            script = workdir / f"snippet_{n}.py"
            script.write_text(snippet.text, encoding="utf-8")
            runs = [[sys.executable, script.name]]
        else:
            runs = [["bash", "-c", cmd] for cmd in shell_commands(snippet.text)]
        if not runs:
            failures.append(f"{where}: no command in the block (mark it not run, or add `$ `)")
        for argv in runs:
            done = subprocess.run(
                argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            if done.returncode != 0:
                tail = (done.stdout + done.stderr)[-2000:]
                failures.append(f"{where}: `{argv[-1]}` exited {done.returncode}:\n{tail}")
                return failures  # later snippets depend on this one
    return failures


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_snippets_run_as_written(path, tmp_path):
    (tmp_path / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    failures = run_snippets(path, tmp_path)
    assert not failures, "\n".join(failures)


def test_the_docs_have_snippets_to_run():
    runnable = [s for p in DOC_FILES for s in extract_snippets(p.read_text()) if s.skip is None]
    assert len(DOC_FILES) >= 6
    assert len(runnable) >= 10


def test_readme_is_short_and_keeps_the_set_up_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    assert 'python -m pip install -e ".[cpu]" && rnn-export demo --out runs/demo' in text
    test_command = (
        'python -m pip install -e ".[test]" && python scripts/onnx2tf_env.py && '
        "python scripts/js_env.py && python -m pytest"
    )
    assert test_command in text
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "../shared" not in text


BROKEN = """\
# doc

```console
$ echo fine
fine
$ python -c "raise SystemExit(3)"
```

```python
print("never reached")
```
"""


@pytest.mark.parametrize(
    ("markdown", "match"),
    [
        (BROKEN, r'doc.md:3 \(console\): `python -c "raise SystemExit\(3\)"` exited 3'),
        ("```python\nimport no_such_module_here\n```\n", r"doc.md:1 \(python\).*exited 1"),
        ("```console\nonly output, no prompt\n```\n", r"doc.md:1 \(console\): no command"),
        (
            "```bash\n$ cat missing.txt && \\\n  echo joined\n```\n",
            r"`cat missing.txt && \\\n  echo joined` exited 1",
        ),
    ],
)
def test_a_broken_snippet_fails(tmp_path, markdown, match):
    doc = tmp_path / "doc.md"
    doc.write_text(markdown)
    work = tmp_path / "work"
    work.mkdir()
    failures = run_snippets(doc, work)
    assert len(failures) == 1
    assert re.search(match, failures[0]), failures[0]


def test_marked_and_other_blocks_are_not_run(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- snippet: not run: needs a GPU -->\n\n```console\n$ false\n```\n\n"
        "```text\n$ false\n```\n\n```console\n$ echo ok > out.txt\n```\n"
    )
    snippets = extract_snippets(doc.read_text())
    assert [(s.lang, s.skip) for s in snippets] == [("console", "needs a GPU"), ("console", None)]
    assert run_snippets(doc, tmp_path) == []
    assert (tmp_path / "out.txt").read_text() == "ok\n"
