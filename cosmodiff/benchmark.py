"""What the benchmarks share to drive the commands: a command run from the repository's root, shown
as it runs, and a run folder trained to its end (reused, resumed or started)."""
import os
import subprocess
import sys

from cosmodiff.checkpoint import read_config
from cosmodiff.repository import ROOT


def run(command, **environment):
    """A command (its parts turned to text) run from the repository's root with these environment
    variables added, printed first; a failure raises."""
    command = list(map(str, command))
    print("$", *(f"{name}={value}" for name, value in environment.items()), " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, env=dict(os.environ, **{name: str(value) for name, value in environment.items()}))


def trained(run_dir, train_flags):
    """The run folder trained to its end: reused when complete, resumed when interrupted, otherwise
    trained by train.py with train_flags; returns its step."""
    if (run_dir / "config.json").exists():
        config = read_config(run_dir)
        if config["step"] < config["train_args"]["train_steps"]:
            run([sys.executable, ROOT / "train.py", "--resume", run_dir])
    else:
        run([sys.executable, ROOT / "train.py", *train_flags, "--results_dir", run_dir.parent, "--run_name", run_dir.name])
    return read_config(run_dir)["step"]
