"""The one error type for bad user input, at the bottom of the import graph.

The CLI prints an `InputError` as a single line and exits with status 2. Everything that
reads a user's file raises it with the file, the line (or row) and the field, so a person can
go straight to the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AdeptError(Exception):
    """A problem the user can act on: printed as one line, exit status 2, no traceback."""

    exit_code = 2


@dataclass
class InputError(AdeptError):
    """Bad input at a known place: `file:line: field: expected ..., got ...`."""

    path: str | Path
    message: str
    line: int | None = None
    field: str | None = None
    where: str = "line"  # "line" for text and JSON, "row" for CSV data rows

    def __str__(self) -> str:
        place = str(self.path)
        if self.line is not None:
            place += f":{self.line}" if self.where == "line" else f": row {self.line}"
        field = f" field '{self.field}':" if self.field else ""
        return one_line(f"{place}:{field} {self.message}")


def one_line(text: str) -> str:
    """Line breaks that came in with the user's data (a field name, a value) shown escaped, so an error
    stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
