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
