"""Model cards: ``card.md`` beside a checkpoint, written from what was measured.

The line starting with ``> `` is the card's headline; ``models.available()`` shows it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from .files import atomic_write


def markdown_table(rows: Iterable[dict], floats: str = "{:.3f}") -> str:
    rows = list(rows)
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: floats.format(v) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def seeds_section(seeds: dict) -> str:
    """The card's table of a model's training seeds (``models.seeds``), or "" where none was measured."""
    if not isinstance(seeds, dict) or not seeds.get("rows"):
        return ""
    text = (f"Across training seeds (the same command with `--seed` changed; each checkpoint evaluated on the same "
            f"{seeds['n']} fresh inputs, seed {seeds['eval_seed']}; seed {seeds['rows'][0]['seed']} is this "
            f"checkpoint):\n\n" + markdown_table(seeds["rows"], floats="{:.4f}"))
    return text + (f"\n\n{seeds['summary']}" if seeds.get("summary") else "")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def card_command(card: str | Path) -> str:
    """The training command(s) recorded in a card (its first code block); "" when there is none."""
    path = Path(card)
    text = path.read_text() if path.is_file() else ""
    block = re.search(r"^```\n(.*?)\n```$", text, re.S | re.M)
    return block.group(1).strip() if block else ""


def commands_so_far(folder: str | Path, command: str, resumed: bool) -> str:
    """``command``, after the commands of the earlier runs when this run resumed one.

    A resumed checkpoint is the work of every run that wrote it, so its card lists them all in order.
    """
    earlier = card_command(Path(folder) / "card.md") if resumed else ""
    return f"{earlier}\n{command}" if earlier else command


def write_card(
    folder: str | Path,
    *,
    title: str,
    headline: str,
    what: str,
    command: str,
    seed: int,
    wall_s: float,
    hardware: str,
    results: Iterable[dict],
    results_note: str = "",
    notes: str = "",
) -> None:
    text = f"""# {title}

> {headline}

## What it is
{what.strip()}

## How it was trained
```
{command}
```
- seed: {seed}
- wall time: {_duration(wall_s)}
- hardware: {hardware}

## Results
{results_note.strip()}

{markdown_table(results)}
"""
    if notes.strip():
        text += f"\n## Notes\n{notes.strip()}\n"
    atomic_write(Path(folder) / "card.md", lambda tmp: Path(tmp).write_text(text))
