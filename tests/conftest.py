import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(name):
    """A file under ../shared, or a skip with the reason when ../shared is absent."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared Quijote data and Pylians reference live in ../shared")
    return path


TINY = ["--image_size", "32", "--batch_size", "4", "--log_every", "1", "--sampling_timesteps", "2", "--warmup_steps", "2"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A one-simulation 32x32 mock set, for tiny training runs."""
    from cosmodiff.fields import save_fields
    from cosmodiff.mock import make_mock_set

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_fields(path, make_mock_set(1, grid=32, image_size=32, progress=False))
    return path


def train_command(data, results, *extra):
    """train.py on data with a tiny model's flags, writing under results."""
    return [sys.executable, str(ROOT / "train.py"), "--data_path", str(data), "--results_dir", str(results), *TINY, *extra]


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
    save_fields(folder / "lh.npz", make_mock_set(2, grid=32, image_size=32, latin_hypercube=True, seed=3, progress=False))
    result = subprocess.run(train_command(folder / "lh.npz", folder / "results", "--train_steps", "2", "--timesteps",
                                          "100", "--run_name", "run", "--condition", "Omega_m,sigma_8"),
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder
