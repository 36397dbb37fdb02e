"""How far train.py's settings travel through the package, measured on a tiny training run.

    python benchmarks/settings_trace.py --results benchmarks/results/settings_trace.json

train.py's main runs a two-step training (one simulation's 32x32 fields, no validation) with its
TrainConfig instrumented: every function that receives it as an argument and every read of one of
its fields is recorded with the module and the call-stack depth where it happens. A module is
visited when its code receives or reads the settings. A climb back up is a pair of modules (deeper,
shallower) where the settings, gone down into the deeper module, come back up to the shallower
caller to be read again; each pair counts once however many steps repeat it. Reading a run folder
is traced too: the package's modules that `cosmodiff.load` and `cosmodiff.checkpoint.load_run`
import in a fresh process.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from cosmodiff.cli import ArgumentParser
from cosmodiff.config import train_config
from cosmodiff.fields import save_fields
from cosmodiff.mock import make_mock_set
from cosmodiff.repository import ROOT, commit

OURS = ("cosmodiff", "train")  # module names of the package and the training script


def own_module(frame):
    """The module a frame runs in, when it is the package's or the script's; else None."""
    name = frame.f_globals.get("__name__", "")
    return name if name.split(".")[0] in OURS else None


def depth(frame):
    count = 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


def trace_training(argv):
    """Runs train.py's main on argv with its settings instrumented; returns the events as
    (module, depth, kind, what)."""
    sys.path.insert(0, str(ROOT))
    import train

    events, made = [], []

    def read(instance, name):
        value = object.__getattribute__(instance, name)
        frame = sys._getframe(1)
        module = own_module(frame)
        if module and not name.startswith("__"):
            events.append((module, depth(frame), "read", name))
        return value

    def profile(frame, event, _):
        if event == "call" and made and any(value is made[0] for value in frame.f_locals.values()):
            module = own_module(frame)
            if module:
                events.append((module, depth(frame), "receives", frame.f_code.co_name))

    def instrumented(**values):
        settings = train_config(**values)
        settings.__class__ = type("TracedConfig", (type(settings),), {"__getattribute__": read})
        made.append(settings)
        return settings

    train.train_config = instrumented
    sys.setprofile(profile)
    try:
        status = train.main(train.parse_args(argv))
    finally:
        sys.setprofile(None)
        train.train_config = train_config
    if status != 0:
        raise SystemExit(f"the traced training run ended with status {status}")
    return events


def climbs(events):
    """The (deeper, shallower) module pairs where an event follows one deeper in the stack in another module."""
    return sorted({(module_a, module_b) for (module_a, depth_a, *_), (module_b, depth_b, *_) in zip(events, events[1:])
                   if module_b != module_a and depth_b < depth_a})


def modules_imported_by(call, run_dir):
    """The package's modules that a call (a statement on `run`) brings in, in a fresh process."""
    code = (f"import sys; run = sys.argv[1]; {call}; "
            "print('\\n'.join(sorted(name for name in sys.modules if name.startswith('cosmodiff'))))")
    result = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                            check=True)
    return result.stdout.split()


def main(args):
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "fields.npz"
        save_fields(data, make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
        events = trace_training(["--data_path", str(data), "--results_dir", str(Path(work) / "runs"), "--run_name",
                                 "traced", "--image_size", "32", "--train_steps", "2", "--save_every", "2",
                                 "--val_samples", "0"])
        run_dir = Path(work) / "runs" / "traced"
        loaders = {"cosmodiff.load": "import cosmodiff; cosmodiff.load(run)",
                   "checkpoint.load_run": "from cosmodiff.checkpoint import load_run; load_run(run)"}
        imported = {name: modules_imported_by(call, run_dir) for name, call in loaders.items()}
    package = sorted(path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
                     for path in (ROOT / "cosmodiff").rglob("*.py"))
    visited = Counter(module for module, *_ in events)
    row = dict(commit=commit(), modules_in_package=len(package), modules_visited=len(visited),
               climbs=len(climbs(events)), climb_pairs=[list(pair) for pair in climbs(events)], events=len(events),
               reads=sum(1 for *_, kind, _ in events if kind == "read"),
               by_module=dict(visited.most_common()),
               loading_imports={name: dict(flag_parser="cosmodiff.cli" in modules,
                                           mock="cosmodiff.mock" in modules or "cosmodiff.nbody" in modules)
                                for name, modules in imported.items()})
    print(f"{row['modules_visited']} of {row['modules_in_package']} package modules receive or read the settings, "
          f"{row['climbs']} climbs back up, {row['reads']} reads")
    for name, found in row["loading_imports"].items():
        print(f"  {name} imports the flag parser: {found['flag_parser']}, the mock code: {found['mock']}")
    for module, count in visited.most_common():
        print(f"  {module}: {count}")
    if args.results:
        Path(args.results).write_text(json.dumps([row], indent=1) + "\n")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=None, help="write the row to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
