"""The ```python blocks of README.md and docs/*.md run, in order, one fresh namespace per file.

A block preceded by the HTML comment ``<!-- no-test -->`` (on the last non-blank line
before the fence) is skipped; use it only for blocks that cannot run in a test (e.g. a
long training run). Tracebacks point at the Markdown file and line.
"""

from __future__ import annotations

import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_TEST = "<!-- no-test -->"

_OPEN = re.compile(r"^(\s*)```python\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: bool


def blocks(path: Path) -> list[Block]:
    """Every ```python block of a Markdown file, with its first line number."""
    lines = path.read_text().splitlines()
    out, i, previous = [], 0, ""
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        start, j = i + 1, i + 1
        while j < len(lines) and not _CLOSE.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: ```python block is never closed")
        code = textwrap.dedent("\n".join(lines[start:j]))
        out.append(Block(path, start + 1, code, skip=previous == NO_TEST))
        previous, i = "", j + 1
    return out


def run_blocks(path: Path) -> dict:
    """Execute the file's blocks in order in one fresh namespace; returns the namespace."""
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    for b in blocks(path):
        if b.skip:
            continue
        code = compile("\n" * (b.line - 1) + b.code, str(path), "exec")  # line numbers of the .md file
        try:
            exec(code, namespace)
        except Exception:
            pytest.fail(f"{path.relative_to(ROOT)}: the block at line {b.line} failed:\n{traceback.format_exc()}",
                        pytrace=False)
    return namespace


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path: Path, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    import plotly.io as pio

    monkeypatch.setattr(pio, "show", lambda *a, **k: None)  # fig.show() in a block opens nothing
    if not blocks(path):
        pytest.skip(f"{path.name} has no python blocks")
    run_blocks(path)


def test_readme_has_blocks_and_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(blocks(ROOT / "README.md")) >= 4
    for target in re.findall(r"\]\(((?:docs|notebooks)/[^)#\s]+)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_block_parser(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n\n```python\nx = 1\n```\n\n<!-- no-test -->\n\n```python\nraise SystemExit\n```\n"
                  "* item:\n\n  ```python\n  y = x + 1\n  ```\n")
    got = blocks(md)
    assert [(b.line, b.code, b.skip) for b in got] == [(4, "x = 1", False), (10, "raise SystemExit", True),
                                                       (15, "y = x + 1", False)]
    run_blocks(md)
