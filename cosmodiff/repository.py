"""The repository's root: where the scripts, train_data/ and benchmarks/ sit (an editable install)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
