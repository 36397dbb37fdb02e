"""Process settings and the start and end every entry script run under accelerate shares."""
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState


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


# --precision: "accelerate" leaves mixed precision to `accelerate launch --mixed_precision`; "auto" picks bf16
# where the device multiplies bf16 matrices in hardware and fp32 elsewhere; "bf16" asks for it anyway
PRECISIONS = ("accelerate", "auto", "fp32", "bf16")
CPU_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}  # Intel AMX and AVX-512 BF16: bf16 matrix products in hardware


def cpu_has_bf16_units(cpuinfo=Path("/proc/cpuinfo")):
    """Whether the processor has bf16 matrix units (its /proc/cpuinfo flags): without them torch emulates
    bf16 on CPU, slower than fp32, so autocast cannot pay."""
    try:
        return bool(CPU_BF16_FLAGS & set(Path(cpuinfo).read_text().split()))
    except OSError:
        return False


def launch_device_type():
    """The device accelerate trains on, known before its state exists (made once, it cannot change its
    precision): "cuda" where a GPU is visible and the launcher did not ask for the CPU."""
    on_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "cuda" if torch.cuda.is_available() and not on_cpu else "cpu"


def device_has_bf16_units(device_type):
    """Whether a device of this type ("cpu", "cuda", ...) multiplies bf16 matrices in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device_type == "cpu" and cpu_has_bf16_units()


def mixed_precision(precision, device_type, bf16_units):
    """accelerate's mixed_precision for --precision on a device (None: the launcher's setting), and a line
    saying what was chosen where the choice is not the one asked for by name ("" otherwise)."""
    if precision == "accelerate":
        return None, ""
    if precision == "fp32":
        return "no", ""
    if bf16_units:
        return "bf16", ("--precision auto: bf16 autocast (this device has bf16 matrix units)" if precision == "auto" else "")
    units = f"{device_type} has no bf16 matrix units" + (f" ({' or '.join(sorted(CPU_BF16_FLAGS))})" if device_type == "cpu" else "")
    return "no", f"--precision {precision}: fp32, because this {units}"


@contextmanager
def accelerated(**kwargs):
    """An Accelerator on this process's share of the cores while the block runs, ended cleanly on every rank.

    On leaving, every rank waits for the others and then tears the process group down: a rank that
    returned early (with the main one still writing) or exited with its gloo group alive aborted at
    interpreter exit now and then ("terminate called without an active exception"). After an error
    the group is torn down without the barrier, which the failed rank's peers may never reach;
    `accelerate launch` then stops them.
    """
    accelerator = Accelerator(**kwargs)
    threads = torch.get_num_threads()
    use_cpu_cores(accelerator)
    try:
        yield accelerator
        accelerator.wait_for_everyone()
    finally:
        torch.set_num_threads(threads)  # the caller's thread count, as it was (a notebook keeps its own)
        accelerator.end_training()
        # accelerate keeps its settings for the process's life and refuses other ones; a library call
        # leaves none behind, so the next call (a notebook's second run) may choose its own precision
        AcceleratorState._reset_state()


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
