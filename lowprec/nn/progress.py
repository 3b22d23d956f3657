"""How a run shows its progress, where someone watches (display only: never the numbers)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, where stderr is not a terminal but a person
    watches."""
    ipython = sys.modules.get("IPython")  # only imported where IPython already runs
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Progress:
    """Progress of a run, shown where someone watches: tqdm.auto when tqdm is installed (a widget
    in Jupyter, a bar in a terminal), else a one-line bar on a terminal's stderr, else (Jupyter
    without tqdm) a printed line every few seconds.

    ``enabled=None`` decides after the first steps: shown only if the whole run looks to take
    more than LONG_RUN_S and someone watches (stderr is a terminal, or a Jupyter kernel), so that
    short runs, pytest and CI logs stay quiet. Display only: it never touches the run's numbers.
    """

    LONG_RUN_S = 5.0  # runs estimated shorter than this show nothing by default
    DECIDE_AFTER = (3, 1.0)  # estimate once this many steps ran, or this many seconds passed
    NOTEBOOK_LINE_S = 5.0  # the plain notebook fallback prints at most one line this often

    def __init__(self, total: int, enabled: bool | None, start: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.start, self.clock = total, start, clock
        self.began = clock()
        self.last = -float("inf")
        self.mode = None  # "tqdm", "terminal", "notebook", or None: nothing shown (yet)
        self.decided = enabled is not None
        self.bar = None
        if enabled:
            self._open()

    def _open(self):
        try:
            # imported here, not at the top: tqdm is optional (the "lab" extra), never required
            from tqdm.auto import tqdm
        except ImportError:
            self.mode = "notebook" if _in_kernel() and not sys.stderr.isatty() else "terminal"
        else:
            self.mode = "tqdm"
            self.bar = tqdm(total=self.total, initial=self.start, unit="step", desc="training")

    def _decide(self, step: int):
        done, elapsed = step - self.start, self.clock() - self.began
        if done < self.DECIDE_AFTER[0] and elapsed < self.DECIDE_AFTER[1] and step < self.total:
            return
        self.decided = True
        estimate = elapsed / max(done, 1) * (self.total - self.start)
        if estimate > self.LONG_RUN_S and (sys.stderr.isatty() or _in_kernel()):
            self._open()

    def show(self, step: int, loss: float) -> None:
        if not self.decided:
            self._decide(step)
        if self.mode == "tqdm":
            self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = self.clock()
        final = step == self.total
        if self.mode == "terminal" and (now - self.last > 0.1 or final):
            done = int(30 * step / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * done}{'.' * (30 - done)}] {step}/{self.total} "
                             f"loss {loss:.4f}")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
            self.last = now
        elif self.mode == "notebook" and (now - self.last >= self.NOTEBOOK_LINE_S or final):
            # "\r" does not redraw a notebook cell: one short line now and then instead
            print(f"step {step}/{self.total}  loss {loss:.4g}  ({now - self.began:.0f} s)",
                  flush=True)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
