"""Process settings and the start and end every entry script run under accelerate shares."""
import os
import signal
from contextlib import contextmanager

import torch
from accelerate import Accelerator


def use_cpu_cores(accelerator):
    """On CPU, give each process its share of the cores.

    `accelerate launch` without a CPU configuration exports OMP_NUM_THREADS=1, which left the
    default training on one of a laptop's cores (benchmarks/train_throughput.py measures the difference).
    COSMODIFF_THREADS overrides the share.
    """
    if accelerator.device.type != "cpu":
        return
    set_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))


def set_threads(default):
    """torch's CPU threads: COSMODIFF_THREADS where set (two jobs on two cores: 1 each), else default."""
    torch.set_num_threads(int(os.environ.get("COSMODIFF_THREADS", default)))


@contextmanager
def accelerated(**kwargs):
    """An Accelerator on this process's share of the cores, ended cleanly on every rank.

    On leaving, every rank waits for the others and then tears the process group down: a rank that
    returned early (with the main one still writing) or exited with its gloo group alive aborted at
    interpreter exit now and then ("terminate called without an active exception"). After an error
    the group is torn down without the barrier, which the failed rank's peers may never reach;
    `accelerate launch` then stops them.
    """
    accelerator = Accelerator(**kwargs)
    use_cpu_cores(accelerator)
    try:
        yield accelerator
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()


class Preemption:
    """Turns SIGTERM and SIGUSR1 (what SLURM and most schedulers send before they kill a job) into a
    request to stop after the current step; the processes agree on it, so all stop at the same step.
    A context manager: on leaving, the handlers that were there before come back (training in-process
    leaves the caller's signals as they were)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            self.previous[number] = signal.signal(number, self.receive)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def receive(self, number, frame):
        self.received = signal.Signals(number).name

    def requested(self, accelerator):
        """Whether any process received a signal (one small all-reduce per call with several processes)."""
        if accelerator.num_processes == 1:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
