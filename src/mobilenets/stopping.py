"""How a training run stops on SIGTERM: the signal a batch scheduler (Slurm's preemption, Kubernetes' pod
termination) or ``kill`` sends first, before SIGKILL after a grace period (30 s by default in Kubernetes).

Python's default for SIGTERM ends the process at once, like SIGKILL: a resume then redoes the work since the last
checkpoint, and a checkpoint being written in the background is lost. Here, in a run of one process, the first
SIGTERM asks the run to stop at the next optimizer step's end (or at the end of the evaluation under way), where it
writes a checkpoint of that step and then ends as a Ctrl-C does (`Terminated`); a resume goes on from that step.
Marian NMT's trainer does the same on SIGTERM (``src/common/signal_handling.h``: a flag the batch loop reads, then
the training state saved). Outside the training loop (set-up, decoding), and at a second SIGTERM, `Terminated` is
raised at once, as a Ctrl-C's KeyboardInterrupt is.

Slurm (every process of a job step) and systemd (every process of a unit's control group) send SIGTERM to the
DataLoader workers too: they leave it to the main process and serve batches until it stops (`StoppableLoader`).

Under torchrun the processes would have to agree on the step to stop at, a collective every step (a host-device
sync on a GPU); they stop at once instead (torchrun forwards SIGTERM to each), and the run resumes from its last
checkpoint, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from torch.utils.data import DataLoader


class Terminated(KeyboardInterrupt):
    """SIGTERM ended the run. A KeyboardInterrupt, so that every path a Ctrl-C takes out of a run (the checkpoint
    under way lands first, the run folder is let go, no traceback) is the one a SIGTERM takes."""


def say_now(message: str) -> None:
    """``message`` on the standard error's file descriptor, in one ``write`` call, past ``sys.stderr``: from a signal
    handler, which runs between two bytecodes of the main thread, maybe inside ``sys.stderr.write`` (a progress
    line), where ``print`` raises "reentrant call inside <_io.BufferedWriter name='<stderr>'>": the run would then
    fail from the handler with a traceback, where it was to stop with a checkpoint."""
    with contextlib.suppress(OSError):  # a closed stderr: nothing to say it on
        os.write(2, (message + "\n").encode(errors="replace"))


class StopRequest:
    """What SIGTERM asked of a run: ``requested`` once it came while the run could stop at a step's end
    (`deferred`). Inert until `sigterm_stops` installs it."""

    def __init__(self) -> None:
        self.requested = False
        self._defer = False
        self._say = say_now  # set by `deferred`, the only block in which the handler speaks

    @contextmanager
    def deferred(self, say: Callable[[str], None] = say_now) -> Iterator[None]:
        """Within the block, a first SIGTERM sets ``requested``: the caller stops at the next step's end. The
        handler says so with ``say``."""
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
    this one inherits the handler: there it ends the process as the default does (a DataLoader worker replaces it
    with torch's; the run's workers start with SIGTERM blocked, `StoppableLoader`)."""
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


class StoppableLoader(DataLoader):
    """A DataLoader whose worker processes leave a SIGTERM to the main process, which acts on it (`sigterm_stops`).

    Slurm (every process of a job step) and systemd (every process of a unit's control group) send SIGTERM to the
    workers too, and torch's worker handler (``torch/csrc/DataLoader.cpp``) ends a worker on a SIGTERM from anyone
    but its parent: the main process, still finishing its step or evaluation, then failed with "DataLoader worker ...
    is killed by signal: Terminated" (a traceback, status 1) instead of stopping with its checkpoint. Here a worker
    blocks SIGTERM and awaits it in a thread (`_outlast_sigterm`); and as a worker is forked 40-200 ms before its
    ``worker_init_fn`` runs (measured in processes of 0.1 and 4 GB), twice an epoch, SIGTERM is blocked in the main
    process while its workers start, so they start with it blocked (a SIGTERM to the main process then is handled
    once they have). Where ``sigwaitinfo`` does not exist (macOS), this is an ordinary DataLoader."""

    def __init__(self, *args, **kwargs) -> None:
        if hasattr(signal, "sigwaitinfo"):  # before the caller's own worker_init_fn, which it still runs
            kwargs["worker_init_fn"] = partial(_outlast_sigterm, os.getpid(), kwargs.get("worker_init_fn"))
        super().__init__(*args, **kwargs)

    def __iter__(self):
        if self.num_workers == 0 or not hasattr(signal, "sigwaitinfo"):
            return super().__iter__()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            return super().__iter__()  # forks the workers (fork: the mask is inherited)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _outlast_sigterm(main: int, then: Callable[[int], None] | None, worker_id: int) -> None:
    """`StoppableLoader`'s ``worker_init_fn``: SIGTERM blocked in this worker (threads started later inherit that),
    and awaited by a thread of its own. The main process's (the DataLoader's ``terminate`` of a worker that did not
    end when told, or Python's at exit) ends the worker at once with status 0, as torch's handler does for its
    parent's; anyone else's is left to the main process, which ends its workers when it stops."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def await_main() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != main:
            pass
        os._exit(0)

    threading.Thread(target=await_main, name="sigterm-from-main", daemon=True).start()
    if then is not None:
        then(worker_id)


__all__ = ["StopRequest", "StoppableLoader", "Terminated", "say_now", "sigterm_stops"]
