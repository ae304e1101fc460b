"""How a training run stops on SIGTERM: the signal a batch scheduler (Slurm's preemption, Kubernetes' pod
termination) or ``kill`` sends first, before SIGKILL after a grace period (30 s by default in Kubernetes).

Python's default for SIGTERM ends the process at once, like SIGKILL: a resume then redoes the work since the last
checkpoint, and a checkpoint being written in the background is lost. Here, in a run of one process, the first
SIGTERM asks the run to stop at the next optimizer step's end (or at the end of the evaluation under way), where it
writes a checkpoint of that step and then ends as a Ctrl-C does (`Terminated`); a resume goes on from that step.
Marian NMT's trainer does the same on SIGTERM (``src/common/signal_handling.h``: a flag the batch loop reads, then
the training state saved). Outside the training loop (set-up,
decoding), and at a second SIGTERM, `Terminated` is raised at once, as a Ctrl-C's KeyboardInterrupt is.

Under torchrun the processes would have to agree on the step to stop at, a collective every step (a host-device
sync on a GPU); they stop at once instead (torchrun forwards SIGTERM to each), and the run resumes from its last
checkpoint, as before.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM ended the run. A KeyboardInterrupt, so that every path a Ctrl-C takes out of a run (the checkpoint
    under way lands first, the run folder is let go, no traceback) is the one a SIGTERM takes."""


class StopRequest:
    """What SIGTERM asked of a run: ``requested`` once it came while the run could stop at a step's end
    (`deferred`). Inert until `sigterm_stops` installs it."""

    def __init__(self) -> None:
        self.requested = False
        self._defer = False
        self._say: Callable[[str], None] = lambda _msg: None

    @contextmanager
    def deferred(self, say: Callable[[str], None]) -> Iterator[None]:
        """Within the block, a first SIGTERM sets ``requested``: the caller stops at the next step's end."""
        self._defer, self._say = True, say
        try:
            yield
        finally:
            self._defer = False

    def handle(self, signum: int, frame) -> None:
        if self._defer and not self.requested:
            self.requested = True
            self._say("SIGTERM: stopping at the end of this step, with a checkpoint (a second SIGTERM stops at once)")
            return
        raise Terminated


@contextmanager
def sigterm_stops(stop: StopRequest) -> Iterator[StopRequest]:
    """SIGTERM handled by ``stop`` within the block, Python's default again after it. Left alone where it cannot be
    (not the main thread) or should not be (SIGTERM already ignored or handled by the caller). A process forked from
    this one (a DataLoader worker) inherits the handler: there it ends the process as the default does."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield stop
        return
    pid = os.getpid()

    def handler(signum: int, frame) -> None:
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        stop.handle(signum, frame)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["StopRequest", "Terminated", "sigterm_stops"]
