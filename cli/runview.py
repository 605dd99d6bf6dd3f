"""How ``citadel workflow`` shows a run: its name, id and UI address at once, the steps' states
while it goes (a live table at a terminal, a line per change otherwise), and a report that fits
80 columns, its values wrapped at words, never cut mid-word."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from citadel.models import WorkflowReport
from citadel.workflows import summarize_output

WIDTH = 80
"""The report's widest line, whatever the terminal: it reads the same in a log or a mail."""
INDENT = "    "
DETAIL_LINES = 4
"""A step's output or error takes at most this many lines; the rest is in ``--json`` and the UI."""
_BREAKS = re.compile(r"[^/,;:&?=_.\-]*[/,;:&?=_.\-]?")


def _pieces(word: str, room: int) -> list[str]:
    """``word`` in pieces of at most ``room`` characters, split after its punctuation (a path's
    slashes, a key's dots); only a run of letters longer than a whole line is split inside."""
    if len(word) <= room:
        return [word]
    pieces: list[str] = []
    current = ""
    for part in (p for p in _BREAKS.findall(word) if p):
        while len(part) > room:  # no punctuation to split at in a whole line: nothing else fits
            if current:
                pieces.append(current)
                current = ""
            pieces.append(part[:room])
            part = part[room:]
        if len(current) + len(part) > room:
            pieces.append(current)
            current = ""
        current += part
    return [*pieces, current] if current else pieces


def wrap(text: str, width: int = WIDTH, indent: str = "", max_lines: int | None = None) -> list[str]:
    """``text`` in lines of at most ``width`` columns after ``indent``, broken between words; past
    ``max_lines`` the last line ends with an ellipsis after a whole word."""
    room = width - len(indent)
    if "\n" not in text and len(text) <= room:
        return [indent + text] if text else []  # kept as it is laid out
    lines: list[str] = []
    line = ""
    for word in text.split():
        for index, piece in enumerate(_pieces(word, room)):
            gap = "" if index else " "
            if line and len(line) + len(gap) + len(piece) > room:
                lines.append(line)
                line = piece
            else:
                line = f"{line}{gap}{piece}" if line else piece
    if line:
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while len(last) + 2 > room and " " in last:
            last = last[: last.rindex(" ")]
        lines[-1] = f"{last} …"
    return [indent + line for line in lines]


def header_lines(report: WorkflowReport, url: str | None) -> list[str]:
    """The run as soon as it exists: its name, its id, and its page in the Prefect UI."""
    lines = [f"run  {report.name or report.workflow_id or 'workflow'}", f"id   {report.flow_run_id}"]
    if url:
        lines.append(f"url  {url}")
    return [piece for line in lines for piece in wrap(line, indent="")]


def _time(value: str | None) -> str:
    return (value or "")[11:19]


def _detail(step: Any) -> str:
    if step.error:
        return f"error: {step.error}"
    return summarize_output(step.output)


def _step_line(step_id: str, step: Any, id_width: int) -> list[str]:
    state = step.state + (" (cached)" if step.cached else "")
    took = f"{step.duration_s:.1f} s" if isinstance(step.duration_s, (int, float)) else ""
    rest = f"{state:<18}{_time(step.start):<10}{_time(step.end):<10}{took}".rstrip()
    line = f"{step_id:<{id_width}}  {rest}"
    if len(line) <= WIDTH:
        return [line]
    return [*wrap(step_id), *wrap(rest, indent=INDENT)]


def report_lines(report: WorkflowReport) -> list[str]:
    """The run's state and every step's state, times, and output or error, in 80 columns."""
    title = f"{report.workflow_id or report.name}: {report.state}"
    lines = [*wrap(title), *wrap(f"run {report.name}, id {report.flow_run_id}")]
    if not report.steps:
        return lines
    id_width = min(max(len("step"), *(len(step_id) for step_id in report.steps)), 24)
    lines.append(f"{'step':<{id_width}}  {'state':<18}{'start':<10}{'end':<10}took".rstrip())
    for step_id, step in report.steps.items():
        lines += _step_line(step_id, step, id_width)
        lines += wrap(_detail(step), indent=INDENT, max_lines=DETAIL_LINES)
    return lines


def print_lines(console: Console, lines: list[str]) -> None:
    """Lines as they are: no markup read in them (an output holds brackets), no re-wrapping."""
    for line in lines:
        console.print(Text(line), soft_wrap=True, highlight=False)


class StepProgress:
    """The steps' states while a run goes: a live table at a terminal, else a plain line for each
    change (a log or a pipe keeps every line, in order)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[str, str | None] = {}
        self.live: Live | None = Live(console=console, transient=True, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> StepProgress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, report: WorkflowReport) -> None:
        states = {"run": report.state, **{step_id: step.state for step_id, step in report.steps.items()}}
        if self.live is not None:
            self.live.update(self._table(states), refresh=True)
        else:
            changed = [f"{key}: {state}" for key, state in states.items() if self.seen.get(key) != state]
            print_lines(self.console, [piece for line in changed for piece in wrap(line)])
        self.seen = states

    @staticmethod
    def _table(states: dict[str, str | None]) -> Table:
        table = Table(box=None, show_header=False)
        table.add_column("step", overflow="ellipsis", max_width=40)
        table.add_column("state")
        for key, state in states.items():
            table.add_row(key, state or "")
        return table
