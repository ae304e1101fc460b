"""The CPU cores this process may run on, and the intra-op thread counts a run may ask for on them.

Apart from `runtimes` (which imports torch) so that the configs' and the command line's help texts, and every
``--threads`` check, read the limit from the one constant here without importing a runtime.
"""

from __future__ import annotations

import os
from typing import Any


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or ``taskset`` narrows), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# The most intra-op threads per core a run may ask for (`check_threads`). A few per core is legitimate (timing
# contention on purpose, a hyperthread sibling the affinity hides); far more only contend, and nothing stopped the
# runtimes before they failed. On the shared 2-vCPU machine a 32-channel 64x64 depthwise conv took (median of 30
# calls) 0.08 ms on 1 torch thread, 0.38 ms on 8, 2.8 ms on 64 and 212 ms on 4096; 32768 stopped libgomp ("Thread
# creation failed"); 100000 ended `predict` with oneDNN's "could not create a primitive" and `eval` with a
# segmentation fault, and left `predict` of an ONNX file and `select` running past 2 minutes.
THREADS_PER_CORE = 4

# How help texts state the limit (one wording, from the constant).
THREADS_LIMIT = f"at most {THREADS_PER_CORE} per core"


def max_threads() -> int:
    """The largest thread count `check_threads` allows here: `THREADS_PER_CORE` x `usable_cores`."""
    return THREADS_PER_CORE * usable_cores()


def check_threads(threads: Any, error: type[ValueError] = ValueError, *, use: str = "", here: bool = True) -> int:
    """``threads`` if it is an intra-op thread count this process may ask for (an integer from 1 to `max_threads`),
    else ``error`` naming it, what it was for (``use``, e.g. " to measure the latency table here") and the range.
    The one check behind every ``--threads`` that runs something here: predict, stream, eval, export, train,
    reproduce, and the latency table of select and bench --lut (bench's measurements allow no more than the cores,
    `run_bench`).
    ``here=False`` checks a count that names runs or rows of another machine (select's bench rows, a report of
    runs trained elsewhere), which runs nothing here: an integer >= 1, this machine's cores aside."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise error(f"threads={threads!r} is not allowed{use}: threads must be an integer >= 1")
    if here and threads > (top := max_threads()):
        raise error(f"threads={threads!r} is not allowed{use}: threads must be an integer from 1 to {top} "
                    f"({THREADS_PER_CORE} x the {usable_cores()} core(s) this process may run on)")  # fmt: skip
    return threads
