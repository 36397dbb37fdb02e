import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


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
