"""Inference trained on emulated fields: the field NPE trained on a conditional run's fields in place of
simulations, judged on real particle-mesh fields beside the NPE trained on the simulations the run
learned from.

    python benchmarks/emulated_inference.py [--emulator pretrained/pm-conditional] \
        [--data_path train_data/conditional-nonlinear] [--emulated_fields 2000] [--emulator_steps 10] \
        [--guidance 1] [--wide_factor 10] [--sets simulations,emulated,...] [--out benchmarks/out/npe-emulated] \
        [--results benchmarks/results/npe_emulated.json]

Field NPEs (evaluate/train_npe.py, patience 30 as the inference-nonlinear split's; each trained unless
--out/NAME/npe holds it): `simulations` on the data's fields, `emulated` on about --emulated_fields
fields the emulator samples at the data's cosmologies with guidance --guidance, `emulated-wide` on as
many fields at --wide_factor times as many cosmologies (a Latin hypercube over the emulator's ranges),
and `emulated-default-guidance` as `emulated` at the sampler's default guidance.
Each is judged by benchmarks/inference.py --split inference-nonlinear --methods power_spectrum,npe
(coverage, SBC, TARP, offset and figure of merit on the split's real test fields, raw and with the
corrections fitted on its calibration fields). The cost of a training set: CPU-seconds per field, for
the emulator as train_npe.py recorded them, for the simulations one simulation of the data's kind
timed here (its slabs share the simulation's cost). Writes the rows, each with its figure of merit
over the simulation-trained NPE's (when `simulations` is among --sets), to --results (docs/results.md's
table: benchmarks/results_tables.py).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cosmodiff.benchmark import run
from cosmodiff.cli import ArgumentParser, COUNT, GUIDANCE
from cosmodiff.condition import DEFAULT_GUIDANCE
from cosmodiff.data import open_data
from cosmodiff.mock import make_mock_set
from cosmodiff.inference.npe import is_npe_run
from cosmodiff.repository import ROOT

SPLIT = "inference-nonlinear"
# the NPEs compared: on the simulations; on emulated fields at the simulations' cosmologies (guidance
# --guidance), the same at --wide_factor times the cosmologies, and at the sampler's default guidance
TRAINING_SETS = ("simulations", "emulated", "emulated-wide", "emulated-default-guidance")
PATIENCE = 30  # as benchmarks/inference.py's NPEs on this split
NPE_LABEL = "NPE (CNN summary)"


def training_sets(args, cosmologies):
    """Each NPE's name and the train_npe.py flags of its training set (TRAINING_SETS, as --sets chooses);
    cosmologies: how many the data holds."""
    data = ["--data_path", args.data_path]

    def emulated(guidance, factor=None):
        return [*data, "--emulator", args.emulator, "--emulated_fields", args.emulated_fields, "--emulator_steps",
                args.emulator_steps, "--emulator_guidance", guidance,
                *(["--emulated_cosmologies", factor * cosmologies] if factor else [])]
    every = {"simulations": data, "emulated": emulated(args.guidance),
             "emulated-wide": emulated(args.guidance, args.wide_factor),
             "emulated-default-guidance": emulated(DEFAULT_GUIDANCE)}
    return {name: every[name] for name in args.sets.split(",")}


def simulation_cpu_seconds(slabs):
    """CPU-seconds of one particle-mesh simulation of the data's kind (its geometry, `slabs` slabs)."""
    started = time.process_time()
    make_mock_set(1, seed=12345, latin_hypercube=True, method="pm", slabs_per_sim=slabs)
    return time.process_time() - started


def judged(args, name, flags):
    """benchmarks/inference.py's rows for one training set's NPE (trained first unless there) and the
    NPE's config."""
    folder = Path(args.out) / name
    npe = folder / "npe"
    if not is_npe_run(npe):
        run([sys.executable, ROOT / "evaluate" / "train_npe.py", *flags, "--patience", PATIENCE, "--out", npe],
            COSMODIFF_THREADS=args.threads)
    results = folder / "inference_rows.json"
    run([sys.executable, ROOT / "benchmarks" / "inference.py", "--split", SPLIT, "--methods", "power_spectrum,npe",
         "--out", folder, "--results", results], COSMODIFF_THREADS=args.threads)
    return json.loads(results.read_text())["rows"], json.loads((npe / "config.json").read_text())


def main(args):
    fieldset = open_data(args.data_path)
    cosmologies = len(np.unique(fieldset.params, axis=0))
    slabs = len(fieldset) // len(np.unique(fieldset.sim_index))
    simulation_seconds = simulation_cpu_seconds(slabs)
    rows, reference = [], {}
    for name, flags in training_sets(args, cosmologies).items():
        method_rows, config = judged(args, name, flags)
        emulated = "emulator" in config
        cost = dict(training_set=name, training_fields=config["fields"], emulator_guidance=config.get("emulator_guidance"),
                    training_cosmologies=config.get("emulated_cosmologies") or cosmologies,
                    npe_epochs=config["epochs"],
                    cpu_seconds_per_training_field=(config["cpu_seconds_per_emulated_field"] if emulated
                                                    else simulation_seconds / slabs))
        for row in method_rows:
            if row["method"].startswith(NPE_LABEL):
                if name == "simulations":
                    reference[row["method"]] = row["fom_vs_power_spectrum"]
                fom_vs_simulations = (row["fom_vs_power_spectrum"] / reference[row["method"]]
                                      if row["method"] in reference else None)
                rows.append(dict(cost, **row, fom_vs_simulations=fom_vs_simulations))
    record = dict(settings=dict(split=SPLIT, emulator=str(args.emulator), data_path=str(args.data_path),
                                emulated_fields=args.emulated_fields, emulator_steps=args.emulator_steps,
                                guidance=args.guidance, wide_factor=args.wide_factor, patience=PATIENCE,
                                simulation_cpu_seconds=simulation_seconds, slabs_per_simulation=slabs),
                  rows=rows)
    Path(args.results).write_text(json.dumps(record, indent=1) + "\n")
    for row in rows:
        versus = "-" if row["fom_vs_simulations"] is None else f"{row['fom_vs_simulations']:.2f}"
        print(f"{row['training_set']}, {row['method']}, {row['parameter']}: 68% {100 * row['coverage_68']:.0f}%, "
              f"SBC KS p {row['sbc_ks_p']:.2g}, FoM vs simulations {versus}")
    print(f"Written: {args.results}; the docs' table: python benchmarks/results_tables.py")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emulator", default=str(ROOT / "pretrained" / "pm-conditional"),
                        help="the conditional run whose fields stand in for simulations")
    parser.add_argument("--data_path", default=str(ROOT / "train_data" / "conditional-nonlinear"),
                        help="the simulations the emulator learned from")
    parser.add_argument("--emulated_fields", type=COUNT, default=2000)
    parser.add_argument("--emulator_steps", type=COUNT, default=10, help="the emulator's sampler steps")
    parser.add_argument("--guidance", type=GUIDANCE, default=1.0, help="the emulator's classifier-free guidance W "
                        "for emulated and emulated-wide (1: the conditional model alone)")
    parser.add_argument("--wide_factor", type=COUNT, default=10,
                        help="emulated-wide's cosmologies over the data's")
    parser.add_argument("--sets", default=",".join(TRAINING_SETS), help=f"training sets, of {', '.join(TRAINING_SETS)}")
    parser.add_argument("--threads", type=COUNT, default=1, help="torch threads of each command")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "npe-emulated"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "npe_emulated.json"))
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
