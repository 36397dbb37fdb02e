"""The repository's root: where the scripts, train_data/ and benchmarks/ sit (an editable install)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_FOLDER = ROOT / "train_data"  # the repository's data folder: the scripts' named splits (cosmodiff.mock)
DEFAULT_SPLIT = "nonlinear"  # what train.py trains on when given no data
DEFAULT_DATA = DATA_FOLDER / DEFAULT_SPLIT


def commit(short=False):
    """The checked-out commit, so a result names the code that made it ("" outside a git checkout)."""
    command = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True).stdout.strip()
