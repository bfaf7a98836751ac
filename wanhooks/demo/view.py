"""The demo's live view: a frame redrawn in place on a terminal, plain lines elsewhere.

On a terminal the view owns the screen while traffic flows (the alternate
screen, as `top` does): per-link throughput bars, who is in the balance
group, the story so far and the daemon's latest log lines.  When it stops
the terminal is restored and the story is printed for the scrollback.
Piped (CI, a log file) it prints the story as it happens and a line of
rates every LINE_EVERY_S.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from .watch import Timeline

FRAME_S = 0.5
LINE_EVERY_S = 2.0
BAR_WIDTH = 24  # the frame fits 80 columns
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


class View:
    def __init__(
        self,
        timeline: Timeline,
        speeds: dict[str, float],
        labels: dict[str, str],
        log_tail: Callable[[int], list[str]],
        out: TextIO = sys.stdout,
    ) -> None:
        self.timeline = timeline
        self.speeds = speeds  # Mbit/s each link's line is shaped to
        self.labels = labels  # e.g. "ADSL"
        self.log_tail = log_tail  # the daemon's last n interesting log lines
        self.out = out
        self.live = out.isatty()
        self.story: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.plugged: set[str] = set(speeds)  # links present on the router

    # --- the story's voice -------------------------------------------------------

    def say(self, text: str) -> None:
        """A line of the story: into the frame while live, printed at once otherwise."""
        with self._lock:
            self.story.append(text)
            if not self._running():
                self._write(text + "\n")

    def _write(self, text: str) -> None:
        """One write per line (or frame), under the lock: the story's thread and the view's
        never interleave."""
        self.out.write(text)
        self.out.flush()

    def _running(self) -> bool:
        return self.live and self._thread is not None and self._thread.is_alive()

    # --- start and stop ----------------------------------------------------------

    def start(self) -> None:
        self._printed = len(self.story)
        if self.live:
            self._write(ALT_SCREEN_ON)
            self._on_screen = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Restore the terminal (always: Ctrl-C too, even one landing inside this) and print what
        the frame showed of the story.  Repeatable: the terminal is restored exactly once."""
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(timeout=5)
        finally:
            with self._lock:
                if self._on_screen:
                    self._on_screen = False  # first: a second ALT_SCREEN_OFF would move the cursor
                    self._write(ALT_SCREEN_OFF + "".join(f"{line}\n" for line in self.story[self._printed :]))

    _printed = 0
    _on_screen = False

    def _run(self) -> None:
        last_line = -LINE_EVERY_S
        while not self._stop.wait(FRAME_S):
            if self.live:
                cols, rows = shutil.get_terminal_size()
                # clipped to the terminal: a wrapped or scrolled line would break the redraw
                lines = [line[: cols - 1] for line in self.frame(rows)][:rows]
                with self._lock:
                    if self._on_screen:
                        self._write(HOME + f"{CLEAR_LINE}\n".join(lines) + CLEAR_LINE + CLEAR_BELOW)
            elif self.timeline.now() - last_line >= LINE_EVERY_S:
                last_line = self.timeline.now()
                with self._lock:
                    self._write(self.rates_line() + "\n")

    # --- what is drawn -------------------------------------------------------------

    def rates_line(self) -> str:
        rates, members, shares = self.timeline.latest(), self.timeline.members(), self.timeline.shares()
        cells = [
            f"{name} {rates.get(name, 0.0):5.1f}"
            + (f"({100 * shares.get(name, 0.0):2.0f}%)" if name in members else "(out)")
            for name in self.speeds
        ]
        return (
            f"  t={self.timeline.now():5.1f}s  " + "  ".join(cells) + f"  = {sum(rates.values()):5.1f} Mbit/s"
        )

    def frame(self, rows: int = 40) -> list[str]:
        """The screen, in at most `rows` lines: the story and the log get what the table leaves."""
        rates, members, shares = self.timeline.latest(), self.timeline.members(), self.timeline.shares()
        top = max(self.speeds.values())
        lines = [
            f"wanhooks demo  |  {self.timeline.now():5.1f} s  |  {self.timeline.phase}",
            "Ctrl-C ends it and removes everything it made",
            "",
            f"  {'LINK':5} {'LINE':18} {'WEIGHT':9} {'SENT (last 0.5 s)':{BAR_WIDTH + 14}}",
        ]
        for name, speed in self.speeds.items():
            line = f"{speed:g} Mbit/s {self.labels.get(name, '')}"
            if name not in self.plugged:
                lines.append(f"  {name:5} {line:18} {'-':9} (not plugged in)")
                continue
            rate = rates.get(name, 0.0)
            filled = round(BAR_WIDTH * min(rate, top) / top)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            balanced = f"{100 * shares.get(name, 0.0):3.0f} %" if name in members else "out"
            lines.append(f"  {name:5} {line:18} {balanced:9} {bar} {rate:5.1f} Mbit/s")
        lines += [f"  {'':5} {'':18} {'':9} {'total':>{BAR_WIDTH}} {sum(rates.values()):5.1f} Mbit/s", ""]
        room = max(2, rows - len(lines) - 3)  # two headings and a blank line between them
        story_n = min(8, max(1, room // 2))
        log_n = min(6, room - story_n)
        told = [line for line in self.story if line.strip()]
        lines += ["the story:"] + [f"  {line}" for line in told[-story_n:]] + [""]
        lines += ["the daemon's log:"] + [f"  {line}" for line in self.log_tail(log_n)]
        return lines
