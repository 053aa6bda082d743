"""Progress display for long loops: a redrawn status block on a terminal,
plain periodic lines anywhere else.

On a TTY the caller hands :meth:`Progress.show` the current status lines each
step and they replace the previous ones in place (ANSI cursor movement; lines
are wrapped or cut to the terminal width so the redraw never smears). When the
stream is a file or a pipe, redrawing would fill it with carriage returns, so
``show`` does nothing and the caller writes every N-th step with
:meth:`Progress.log` instead. Permanent messages go through ``log`` in both
modes so they never tear the status block.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, List, Optional, Sequence

CLEAR_TO_END = "\x1b[J"


def format_duration(seconds: float) -> str:
    """H:MM:SS (or M:SS under an hour); '?' when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bar(done: int, total: int, width: int = 20) -> str:
    frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    full = int(frac * width)
    return "[" + "#" * full + "." * (width - full) + "]"


def wrap_fields(fields: Sequence[str], width: int, indent: str = "  ") -> List[str]:
    """Pack fields into lines no wider than ``width``; a field is never split."""
    lines: List[str] = []
    cur = ""
    for f in fields:
        candidate = f if not cur else f"{cur}  {f}"
        if cur and len(indent) + len(candidate) > width:
            lines.append(indent + cur)
            cur = f
        else:
            cur = candidate
    if cur:
        lines.append(indent + cur)
    return [line[:width] for line in lines]


class Progress:
    """Status block on a terminal, log lines elsewhere.

    ``enabled=False`` (ranks other than 0) swallows everything. ``tty`` forces
    the mode; by default it is the stream's ``isatty()``.
    """

    def __init__(self, stream: Optional[IO[str]] = None, *, tty: Optional[bool] = None, enabled: bool = True,
                 min_redraw_s: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.enabled = enabled
        self.min_redraw_s = min_redraw_s
        self._shown = 0  # lines of the status block currently on screen
        self._block: List[str] = []
        self._last_draw = 0.0

    def width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns - 1)

    def _erase(self) -> None:
        if self._shown:
            up = f"\x1b[{self._shown - 1}A" if self._shown > 1 else ""
            self.stream.write("\r" + up + CLEAR_TO_END)
            self._shown = 0

    def _draw(self) -> None:
        if not self._block:
            return
        w = self.width()
        lines = [line[:w] for line in self._block]
        self.stream.write("\n".join(lines))
        self._shown = len(lines)
        self.stream.flush()

    def show(self, lines: Sequence[str], force: bool = False) -> None:
        """Replace the status block (TTY only; throttled unless ``force``)."""
        if not (self.enabled and self.tty):
            return
        self._block = list(lines)
        now = time.monotonic()
        if not force and self._shown and now - self._last_draw < self.min_redraw_s:
            return
        self._last_draw = now
        self._erase()
        self._draw()

    def log(self, line: str) -> None:
        """A permanent line, above the status block on a terminal."""
        if not self.enabled:
            return
        if self.tty:
            self._erase()
            self.stream.write(line + "\n")
            self._draw()
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Leave the last status block on screen and move below it."""
        if self.enabled and self.tty and self._shown:
            self._erase()
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        self._shown = 0
        self._block = []
