"""Progress of long steps: a bar in a terminal or a notebook, a line per tenth in a log file.

    for batch in progress(batches, "evaluate", total=len(batches), unit="batch"):
        ...

Training's epochs report through Keras (a bar in a terminal, a line per epoch in a log file);
everything else that takes seconds to minutes (loading photos, evaluating, measuring BatchNorm
statistics, exporting, the benchmark's phases) reports through here, the same way.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def interactive() -> bool:
    """A terminal or a notebook, where a bar redraws in place."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


# In a log, a line at a tenth only once this long after the last: a step that is over in a moment
# gets its last line alone, not ten.
LOG_INTERVAL_S = 1.0


def progress(iterable, desc: str, total: int | None = None, unit: str = "it"):
    """`iterable`, reporting how far it got: a tqdm bar when interactive, otherwise a line on
    standard error at every tenth of `total` (at most one a second) and at the end."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if interactive():
        yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)
        return
    started, step, done = time.perf_counter(), max((total or 0) // 10, 1), 0
    last = started
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if total and (done == total or (done % step == 0 and now - last >= LOG_INTERVAL_S)):
            print(f"{desc}: {done}/{total} {unit} ({now - started:.0f} s)", file=sys.stderr,
                  flush=True)
            last = now
