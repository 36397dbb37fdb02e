import contextlib
import csv
import gc
import io
import os
import runpy
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmodiff.repository import ROOT

SHARED = ROOT.parent / "shared"


def shared_path(name):
    """A file under ../shared, or a skip with the reason when ../shared is absent."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared Quijote data and Pylians reference live in ../shared")
    return path


REPORTED_VERSIONS = ("torch", "numpy", "pytest", "sbi", "accelerate")


def pytest_sessionstart(session):
    """The suite's first line: the versions it runs with, so a failure after a new release reads at once."""
    from importlib.metadata import version

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not os.environ.get("PYTEST_XDIST_WORKER"):
        reporter.write_line("versions: " + ", ".join(f"{name} {version(name)}" for name in REPORTED_VERSIONS))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n: one core per worker, for this process's torch and for the scripts the tests start
    os.environ["COSMODIFF_THREADS"] = "1"
    torch.set_num_threads(1)


def free_port():
    """A TCP port no one listens on now: two-process tests running side by side (pytest -n) must not
    meet at accelerate's default rendezvous port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


TINY = ["--image_size", "32", "--batch_size", "4", "--log_every", "1", "--sampling_timesteps", "2", "--warmup_steps", "2"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A one-simulation 32x32 mock set, for tiny training runs."""
    from cosmodiff.fields import save_fields
    from cosmodiff.mock import make_mock_set

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_fields(path, make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
    return path


def train_command(data, results, *extra):
    """train.py on data with a tiny model's flags, writing under results."""
    return [sys.executable, str(ROOT / "train.py"), "--data_path", str(data), "--results_dir", str(results), *TINY, *extra]


def run_in_process(command, cwd=None, env=None):
    """A script's command line ([python, script, *argv] or [python, -m, module, *argv]) run as __main__
    in this process, in cwd with env, its output captured: subprocess.run's CompletedProcess without
    an interpreter's start-up. Processes stay where they are the point: signals, kill -9, several
    processes. An uncaught exception is exit status 1 with its traceback on stderr, as in a process."""
    command = [str(part) for part in command]
    assert command[0] == sys.executable, command
    module = command[2] if command[1] == "-m" else None
    argv = [module, *command[3:]] if module else command[1:]
    saved = os.getcwd(), dict(os.environ), sys.argv, list(sys.path), torch.get_num_threads()
    # `python -m` starts without the module imported; a test that imported it keeps its copy afterwards
    imported = sys.modules.pop(module, None) if module else None
    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    try:
        os.chdir(cwd or saved[0])
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        sys.argv = argv
        if not module:
            sys.path.insert(0, str(Path(argv[0]).resolve().parent))  # as python puts the script's folder first
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            warnings.simplefilter("always")  # shown on stderr, as a fresh process shows them
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            try:
                if module:
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exit_status:
                status = exit_status.code if isinstance(exit_status.code, int) else int(exit_status.code is not None)
                if isinstance(exit_status.code, str):
                    print(exit_status.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        sys.argv, sys.path[:] = saved[2], saved[3]
        torch.set_num_threads(saved[4])  # a script sets the threads of its process, here the test's
        if imported is not None:
            sys.modules[module] = imported
        gc.collect()  # a finished run's DataLoader workers are shut down now, not in a later test
    return subprocess.CompletedProcess(command, status, stdout.getvalue(), stderr.getvalue())


def wait_for_group_exit(group, timeout=30):
    """Until every process of a killed process group is gone (a DataLoader worker holds the run's lock
    file until it has exited, a moment after its parent)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def losses(run_dir):
    """(step, loss) rows of a run's log.csv."""
    return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader((run_dir / "log.csv").open())]


def noise_level(formulation, c_noise):
    """The noise level a network input c_noise stands for, inverted here independently of the code."""
    c_noise = c_noise.double()
    if formulation.name == "vp":
        return torch.from_numpy(np.exp(np.interp(c_noise.cpu().numpy(), np.arange(formulation.timesteps),
                                                 formulation.sigmas.log().numpy())))
    return (4 * c_noise).exp()  # edm and flow: c_noise = ln(sigma) / 4


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory):
    """A tiny run conditioned on (Omega_m, sigma_8), trained on two Latin-hypercube mocks (lh.npz)."""
    from cosmodiff.fields import save_fields
    from cosmodiff.mock import make_mock_set

    folder = tmp_path_factory.mktemp("conditional")
    save_fields(folder / "lh.npz", make_mock_set(2, grid=32, image_size=32, latin_hypercube=True, seed=3, progress=False, method="2lpt"))
    result = run_in_process(train_command(folder / "lh.npz", folder / "results", "--train_steps", "2", "--timesteps",
                                          "100", "--run_name", "run", "--condition", "Omega_m,sigma_8"), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder
