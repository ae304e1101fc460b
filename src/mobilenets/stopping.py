"""How a training run stops on SIGTERM: the signal a batch scheduler (Slurm's preemption, Kubernetes' pod
termination) or ``kill`` sends first, before SIGKILL after a grace period (30 s by default in Kubernetes and in
torchrun, which forwards its SIGTERM to each process it started).

Python's default for SIGTERM ends the process at once, like SIGKILL: a resume then redoes the work since the last
checkpoint, and a checkpoint being written in the background is lost. Here the first SIGTERM asks the run to stop at
an optimizer step's end (or at the end of the evaluation under way), where it writes a checkpoint of that step and
then ends as a Ctrl-C does (`Terminated`); a resume goes on from that step. Marian NMT's trainer does the same on
SIGTERM (``src/common/signal_handling.h``: a flag the batch loop reads, then the training state saved). Outside the
training loop (set-up, decoding), and at a second SIGTERM, `Terminated` is raised at once, as a Ctrl-C's
KeyboardInterrupt is.

In a run of one process that step is the one under way. Under torchrun every process must stop after the same step, or
the others fail in their next collective: `StopAgreement` takes the largest of every process's request (so a SIGTERM
to some processes only, as when Kubernetes stops one pod of a job of several machines, stops them all) in an
all-reduce on a gloo group of its own, launched at each step's end and read at the next step's end, so that the host
never waits for the device for it (at an epoch's end and first step it is read at once); the processes stop one step
later than one process would, and none ends before the main process's checkpoint is on disk (torchrun stops the others
as soon as one ends: that SIGTERM, to processes already ending, is ignored). Megatron-LM's ``--exit-signal-handler``
(``megatron/training/dist_signal_handler.py``) gathers the same flag every iteration, but blocking and on the GPU, a
host-device sync each step; torchrun itself only forwards the signal. Under torchrun a SIGTERM within `TOGETHER_S` of
the first is the same request, not a second one: Slurm (every process of a job step) and systemd (every process of a
unit's control group) signal each process themselves, and torchrun forwards its own.

Slurm and systemd send SIGTERM to the DataLoader workers too: they leave it to the main process and serve batches
until it stops (`StoppableLoader`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

# seconds after a first SIGTERM within which another is the same request (`StopRequest.deferred`'s ``together_s``):
# under torchrun a worker gets the scheduler's SIGTERM and torchrun's forwarded one, milliseconds apart
TOGETHER_S = 5.0


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
        self._together_s, self._first = 0.0, 0.0
        self.ending = False  # every process of a torchrun job is ending at its agreed stop (`StopAgreement.all_stop`)

    @contextmanager
    def deferred(self, say: Callable[[str], None] = say_now, together_s: float = 0.0) -> Iterator[None]:
        """Within the block, a first SIGTERM sets ``requested``: the caller stops at the next step's end (under
        torchrun, ``together_s`` > 0: at the step every process agrees on, `StopAgreement`), and another SIGTERM
        within ``together_s`` of it is the same request, not a second one. The handler says so with ``say``."""
        self._defer, self._say, self._together_s = True, say, together_s
        try:
            yield
        finally:
            self._defer = False

    def handle(self, signum: int, frame) -> None:
        if self.ending:
            return  # torchrun's to the processes still ending once one has: their checkpoint is saved, they end
        if self._defer and not self.requested:
            self.requested, self._first = True, time.monotonic()
            self._say(
                "SIGTERM: stopping at the end of this step, with a checkpoint (a second SIGTERM stops at once)"
                if not self._together_s
                else "SIGTERM: stopping at the end of a step every process agrees on, with a checkpoint (a second "
                f"SIGTERM, {self._together_s:g} s or more after the first, stops at once)"
            )
            return
        if self._defer and time.monotonic() - self._first < self._together_s:
            return  # the scheduler's and torchrun's SIGTERM of the same stop
        raise Terminated


class StopAgreement:
    """Under torchrun: whether any process's `StopRequest` asked to stop, the same answer on every process at the
    same step (`stopping`). The all-reduce (MAX of a 0/1 host tensor) runs on ``group``, a gloo group kept for it, so
    that it neither waits for the device nor falls between the gradient all-reduces of the default group; each
    process calls `at_step_end` and `at_epoch_end` at the same points, so the collectives on ``group`` match. At an
    epoch's end and at its first step the host waits for the other processes' hosts to get there: a SIGTERM during
    the epoch's evaluation stops the run at the epoch's end, one during its checkpoint at the next epoch's first
    step."""

    def __init__(self, stop: StopRequest, group=None) -> None:
        """``group``: a new gloo group of every process by default (`torch.distributed.new_group`, which every
        process calls at the same point)."""
        self.stop = stop
        self.group = group if group is not None else dist.new_group(backend="gloo")
        self._pending: tuple | None = None  # (work, tensor) of the all-reduce launched at the last step's end

    def at_step_end(self) -> bool:
        """Whether every process agreed to stop, as they were at the previous step's end; this step's own requests
        are the next step's answer. The host waits only for the other processes' hosts to have reached the previous
        step's end. At an epoch's first step (or a run's first, resumed mid-epoch) none is pending, as `at_epoch_end`
        reads its own at once: this one agrees at once too, blocking, so that a SIGTERM during what followed that
        (the epoch's checkpoint) stops the run here, not a step later. Every process makes the same calls in the
        same order, so every process takes the same branch and the collectives on ``group`` still match."""
        if self._pending is None:
            self._pending = self._launch()
        agreed = self._take()
        self._pending = self._launch()
        return agreed

    def at_epoch_end(self) -> bool:
        """Whether any process asked to stop by now (blocking: once an epoch, after its evaluation)."""
        agreed = self._take()
        self._pending = self._launch()
        return self._take() or agreed

    def all_stop(self) -> None:
        """Wait until every process is here: where they stop, so that none ends (and torchrun, seeing it end, stops
        the others at once) before the main process's checkpoint is on disk. From then on a SIGTERM is that one of
        torchrun's, to the processes still ending once one has: ignored, it no longer cuts short their tearing down
        (a GPU process group's can take seconds), nor replaces the step their last line names."""
        dist.barrier(group=self.group)
        self.stop.ending = True

    def _launch(self) -> tuple:
        flag = torch.tensor([int(self.stop.requested)], dtype=torch.int32)
        return dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag

    def _take(self) -> bool:
        if self._pending is None:
            return False
        (work, flag), self._pending = self._pending, None
        work.wait()
        return bool(flag.item())  # a host tensor: no device sync


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
    once they have). Where ``sigwaitinfo`` does not exist (macOS), this is an ordinary DataLoader.

    Its workers are forked where the platform can fork (Linux), whatever the interpreter's default start method:
    Python 3.14 makes it forkserver on Linux, whose workers are sent the dataset pickled, each epoch (an in-memory
    image cache of hundreds of MiB copied into every worker, where a fork shares it), and do not start with the
    main process's signal mask (the window above). A caller's ``multiprocessing_context`` is kept."""

    def __init__(self, *args, **kwargs) -> None:
        if hasattr(signal, "sigwaitinfo"):  # before the caller's own worker_init_fn, which it still runs
            kwargs["worker_init_fn"] = partial(_outlast_sigterm, os.getpid(), kwargs.get("worker_init_fn"))
        if kwargs.get("num_workers", 0) > 0 and kwargs.get("multiprocessing_context") is None:
            kwargs["multiprocessing_context"] = fork_context()
        super().__init__(*args, **kwargs)

    def __iter__(self):
        if self.num_workers == 0 or not hasattr(signal, "sigwaitinfo"):
            return super().__iter__()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            return super().__iter__()  # forks the workers (fork: the mask is inherited)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def fork_context():
    """The fork start method's multiprocessing context where it is safe (None elsewhere: the default). macOS lists
    fork among its start methods too, but its system libraries do not survive a fork (Python's default there is
    spawn since 3.8, bpo-33725): there it is left to the default."""
    import multiprocessing

    safe = sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork") if safe else None


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


__all__ = ["TOGETHER_S", "StopAgreement", "StopRequest", "StoppableLoader", "Terminated", "say_now", "sigterm_stops"]
