"""Small helpers the task parsers share: quoting a piece of input, trimming blank lines."""

from __future__ import annotations


def show(s: str, limit: int = 24) -> str:
    """``repr`` of a piece of the input, cut to ``limit`` characters (messages stay short)."""
    return repr(s) if len(s) <= limit else repr(s[:limit]) + "..."


def trim(text: str) -> str:
    """``text`` without its trailing blank (whitespace-only) lines."""
    end = len(text.rstrip())
    if end == 0:
        return ""
    cut = text.find("\n", end)
    return text if cut < 0 else text[:cut]
