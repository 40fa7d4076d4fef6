"""Columns of the CLI's rich tables that must never cut what they show.

Rich fits a table to the terminal by shrinking columns: a ``no_wrap`` column is cut with an
ellipsis, any other is wrapped, so at 60 columns a run id (``bbc-news-grid-0bdd0839``) came
out as ``bbc-news-gr…`` and a learning rate as ``2e-…``. A run id is what a user copies into
the next command, and a sweep's parameter values are what tells its runs apart, so these
columns get a minimum width and the other columns (and their own headers) give way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table
from rich.text import Text


def add_id_column(table: Table, header: str, ids: Iterable[str], style: str = "cyan") -> None:
    """A column of run ids (or sweep names): each on one line, whole, however narrow."""
    widest = max((len(i) for i in ids), default=0)
    table.add_column(header, style=style, no_wrap=True, min_width=widest)


def add_value_column(table: Table, header: str, cells: Iterable[str]) -> None:
    """A column of values (sweep parameters), each on one line and whole, however narrow;
    its header (``train.learning_rate``, plain text) folds instead.

    Both kinds of column are ``no_wrap``: rich squeezes the wrappable columns first, down to
    nothing, and only a column it does not squeeze keeps its ``min_width``."""
    widest = max((len(c) for c in cells), default=0)
    title = Text(header, no_wrap=False, overflow="fold")
    table.add_column(title, no_wrap=True, min_width=widest)


def format_value(value: Any) -> str:
    """A sweep parameter's value in a cell: ``—`` for none, floats short, a section (a
    ``lora`` point) as its set keys."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, [], {})) or "{}"
    return str(value)
