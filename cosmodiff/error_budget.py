"""Error budget of one checkpoint: how much of its MAFD is the sampler's, how much the network's,
and how large the sample-variance floor is, in delta space and in log space (P(k) of ln(1 + delta)),
overall and per k band; and the scorecard of each solve against the real fields: every statistic
(`cosmodiff.stats.STATISTICS`) over its floor, and the worst (`cosmodiff.stats.compare`).

    python benchmarks/error_budget.py RUN [--sampler dpm++:20:log] [--reference dpm++3m:40:log]
                                          [--check_reference] [--num_samples 384]

(`measure`; benchmarks/convergence.py and benchmarks/fidelity.py record their rows through it too.)

- sampler error: the MAFD between the sampler's fields and the reference solve's from the same
  initial noise (seed and sample indices), so the fields are paired and only the solve differs;
- model error: the reference solve against the real test fields (the network's own error, once
  the solve is exact);
- floor: the median MAFD between sets drawn as the compared ones are, the real set by simulation
  (`cosmodiff.stats.floor_draws`).
--check_reference also solves at twice the reference's steps: the change must stay below 0.2x the
floor for the reference to count as exact. One-point statistics that the exponential amplifies
(variance of delta against that of ln(1 + delta), the upper quantiles of delta) come with it.
Writes OUT/error_budget.json and OUT/error_budget.png (OUT: RUN/error_budget by default); solved
fields are kept in OUT and reused when their settings match.
"""
import json
from pathlib import Path

import numpy as np

from cosmodiff import plots
from cosmodiff.atomic import atomic_path, atomic_write_text
from cosmodiff.checkpoint import load_run, read_config, read_log
from cosmodiff.diffusion import build_formulation, network_evaluations, noise_levels, parse_setting
from cosmodiff.fields import load_fields
from cosmodiff.launch import accelerated
from cosmodiff.repository import ROOT
from cosmodiff.run import test_split_of
from cosmodiff.sampling import physical_fields
from cosmodiff.stats import (compare, log_density, mafd, mafd_floor, nyquist_mask, overdensity, power_spectrum,
                             simulations_for_floor)
from cosmodiff.transforms import transform_from_dict

K_BANDS = {"k < 0.1": (0, 0.1), "0.1-0.4": (0.1, 0.4), "0.4-Nyquist": (0.4, float("inf"))}  # h/Mpc
TAIL_QUANTILES = (0.99, 0.999)
CONVERGED = 0.2  # the most a doubled reference may move, in floors


def solved(run_dir, setting, n_samples, seed, batch_size, out, device):
    """The run's fields (N, H, W) in physical units from one sampler setting, sample i from noise
    seeded with (seed, i); kept in out and reused while the checkpoint and settings match."""
    network, formulation, config = load_run(run_dir)
    network.to(device)
    sampler, steps, grid = parse_setting(setting)
    record = dict(step=config["step"], setting=setting, num_samples=n_samples, seed=seed)
    path = out / f"fields-{setting.replace(':', '-')}.npy"
    if path.exists() and path.with_suffix(".json").exists() and json.loads(path.with_suffix(".json").read_text()) == record:
        return np.load(path)
    transform = transform_from_dict(config["transform"])
    size = config["image_size"]
    batches = []
    for start in range(0, n_samples, batch_size):
        indices = range(start, min(start + batch_size, n_samples))
        batches.append(physical_fields(formulation, network, transform, size, indices, seed, sampler, steps, grid=grid))
    fields = np.concatenate(batches)
    with atomic_path(path) as temporary:
        np.save(temporary, fields)
    atomic_write_text(path.with_suffix(".json"), json.dumps(record))
    return fields


def evaluations(run_dir, setting):
    """Network evaluations per sample of a setting on this run's formulation (vp's grids snap to its
    training timesteps, which can merge levels)."""
    sampler, steps, grid = parse_setting(setting)
    formulation = build_formulation(read_config(run_dir)["diffusion"])
    steps_taken = len(noise_levels(formulation, sampler, steps, grid)) - 1
    return network_evaluations(sampler, steps_taken)


def spectra(fields, box_size):
    """k and per-field P(k) of delta and of ln(1 + delta)."""
    k, delta_power, _ = power_spectrum(fields, box_size)
    _, log_power, _ = power_spectrum(log_density(fields), box_size, as_overdensity=False)
    return k, {"delta": delta_power, "log": log_power}


def band_masks(k, box_size, grid):
    """The MAFD's bins (to Nyquist), overall and per k band that holds any (a coarse field has no
    0.4-Nyquist band)."""
    inside = nyquist_mask(k, box_size, grid)
    bands = {name: inside & (k >= low) & (k < high) for name, (low, high) in K_BANDS.items()}
    return {"all": inside, **{name: mask for name, mask in bands.items() if mask.any()}}


def budget(real, reference, sampled_power, masks, n_generated, real_sims=None):
    """Per space and band: floor median, model error, sampler error and total MAFD, with the ratios to the
    floor (drawn by simulation where real_sims gives each real field's)."""
    rows = {}
    for space in ("delta", "log"):
        rows[space] = {}
        for band, mask in masks.items():
            floor = float(np.median(mafd_floor(real[space], n_generated, mask, real_sims=real_sims)[0]))
            model_error = mafd(reference[space], real[space], mask)
            sampler_error = mafd(sampled_power[space], reference[space], mask)
            total = mafd(sampled_power[space], real[space], mask)
            rows[space][band] = dict(floor=floor, model_error=model_error, sampler_error=sampler_error, mafd=total,
                                     model_over_floor=model_error / floor, sampler_over_floor=sampler_error / floor,
                                     mafd_over_floor=total / floor)
    return rows


def scorecards(real_set, fields, settings):
    """The scorecards of the reference and sampler solves against the real fields, each solve compared
    once (the two are one solve when their settings are the same)."""
    by_setting = {}
    for name in ("reference", "sampler"):
        if settings[name] not in by_setting:
            by_setting[settings[name]] = compare(real_set.fields, fields[name], real_set.box_size, progress=False,
                                                 real_sims=real_set.sim_index)["scorecard"]
    return {name: by_setting[settings[name]] for name in ("reference", "sampler")}


def one_point(fields):
    """Statistics the exponential amplifies: variance of delta and of ln(1 + delta), upper quantiles of delta."""
    delta = overdensity(fields)
    quantiles = np.quantile(delta, TAIL_QUANTILES)
    return dict(var_delta=float(delta.var()), var_log=float(log_density(fields).var()),
                **{f"delta_q{q:g}": float(value) for q, value in zip(TAIL_QUANTILES, quantiles)})


def measure(run_dir, sampler="dpm++:20:log", reference="dpm++3m:40:log", out=None, test=None, num_samples=None,
            seed=0, batch_size=64, check_reference=False, check_samples=None, results=None, recipe=None):
    """The error budget of a run folder (the module's docstring): sampler and reference are settings
    "sampler:steps[:grid]"; test: the real fields (default: the test.npz beside the run's training
    data, else the 2lpt split's); num_samples: default as many as the real fields. Writes
    OUT/error_budget.json and .png (OUT: RUN/error_budget by default) and, given results, the
    budget's rows to that file under recipe's name (default: the run folder's); returns the report."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "error_budget"
    out.mkdir(parents=True, exist_ok=True)
    config = read_config(run_dir)
    test_path = Path(test) if test else test_split_of(config) or ROOT / "train_data" / "test.npz"
    real_set = load_fields(test_path)
    real_sims = simulations_for_floor(real_set.sim_index)
    n_samples = num_samples or len(real_set)
    settings = {"reference": reference, "sampler": sampler}
    if check_reference:
        name, steps, grid = parse_setting(reference)
        settings["reference_doubled"] = f"{name}:{2 * steps}" + (f":{grid}" if grid else "")
    counts = dict(reference=n_samples, sampler=n_samples, reference_doubled=min(check_samples or n_samples, n_samples))
    with accelerated() as accelerator:
        fields = {name: solved(run_dir, setting, counts[name], seed, batch_size, out, accelerator.device)
                  for name, setting in settings.items()}
    k, real = spectra(real_set.fields, real_set.box_size)
    power = {name: spectra(value, real_set.box_size)[1] for name, value in fields.items()}
    masks = band_masks(k, real_set.box_size, real_set.fields.shape[-1])
    report = dict(run=str(run_dir.resolve()), step=config["step"], data=config.get("data", {}).get("path"),
                  test=str(test_path), n_real=len(real_set), n_generated=n_samples, seed=seed,
                  reference=reference, sampler=sampler,
                  network_evaluations={name: evaluations(run_dir, setting) for name, setting in settings.items()},
                  floor_by="simulation" if real_sims is not None else "field",
                  budget=budget(real, power["reference"], power["sampler"], masks, n_samples, real_sims),
                  scorecard=scorecards(real_set, fields, settings),
                  one_point={name: one_point(value) for name, value in {"real": real_set.fields, **fields}.items()})
    if check_reference:
        report["reference_check"] = reference_check(power, counts["reference_doubled"], masks, report, settings)
    (out / "error_budget.json").write_text(json.dumps(report, indent=1))
    if results:
        record_rows(Path(results), fidelity_rows(report, recipe or run_dir.name, read_log(run_dir)[-1]["cpu_s"] / 60))
    plots.error_budget(k, masks["all"], real, power, fields, real_set.fields, out / "error_budget.png")
    print_report(report)
    print(f"Written: {out / 'error_budget.json'}, {out / 'error_budget.png'}")
    return report


def reference_check(power, paired, masks, report, settings):
    """How far the doubled reference moves the first `paired` fields of the reference (the same noise)."""
    moved = {space: mafd(power["reference_doubled"][space], power["reference"][space][:paired], masks["all"])
             / report["budget"][space]["all"]["floor"] for space in ("delta", "log")}
    return dict(doubled=settings["reference_doubled"], n_fields=paired, moved_over_floor=moved,
                converged=bool(max(moved.values()) < CONVERGED))


def fidelity_rows(report, recipe, cpu_minutes):
    """benchmarks/results/fidelity.json's rows of one budget: the reference solve and the sampler (one
    row when they are the same), each with the model and sampler errors (delta space unless named log)."""
    rows = []
    for name in ("reference", "sampler") if report["sampler"] != report["reference"] else ("reference",):
        sampler, steps, grid = parse_setting(report[name])
        delta, log = report["budget"]["delta"], report["budget"]["log"]
        total = "model_error" if name == "reference" else "mafd"
        rows.append(dict(run=report["run"], recipe=recipe, data=report.get("data"), step=report["step"],
                         cpu_minutes=round(cpu_minutes, 2),
                         solve=name, sampler=sampler, steps=steps, grid=grid, nfe=report["network_evaluations"][name],
                         n_generated=report["n_generated"], n_real=report["n_real"],
                         mafd=delta["all"][total], floor_median=delta["all"]["floor"],
                         mafd_over_floor=delta["all"][total] / delta["all"]["floor"],
                         model_error=delta["all"]["model_error"],
                         sampler_error=delta["all"]["sampler_error"] if name == "sampler" else 0.0,
                         log_mafd_over_floor=log["all"][total] / log["all"]["floor"],
                         band_mafd_over_floor={band: row[total] / row["floor"] for band, row in delta.items() if band != "all"},
                         floor_by=report["floor_by"], test=f"{Path(report['test']).parent.name}/{Path(report['test']).name}",
                         scorecard={statistic: row["over_floor"]
                                    for statistic, row in report["scorecard"][name]["statistics"].items()},
                         worst_statistic=report["scorecard"][name]["worst"]["statistic"],
                         worst_over_floor=report["scorecard"][name]["worst"]["over_floor"]))
    return rows


def record_rows(path, rows, key=("run", "step", "solve", "sampler", "steps", "grid")):
    """Add rows to a results file, replacing those with the same key (by default: the same run, step
    and sampler setting)."""
    kept = json.loads(path.read_text()) if path.exists() else []
    new_keys = {tuple(row[name] for name in key) for row in rows}
    kept = [row for row in kept if tuple(row.get(name) for name in key) not in new_keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(kept + rows, indent=1))


def print_report(report):
    print(f"{report['run']} at step {report['step']}: reference {report['reference']}, sampler {report['sampler']}, "
          f"{report['n_generated']} generated vs {report['n_real']} real")
    print("| space | k band | floor | model error | sampler error | MAFD |")
    print("| --- | --- | --- | --- | --- | --- |")
    for space, bands in report["budget"].items():
        for band, row in bands.items():
            print(f"| {space} | {band} | {100 * row['floor']:.2f}% | {100 * row['model_error']:.2f}% "
                  f"({row['model_over_floor']:.1f}x) | {100 * row['sampler_error']:.2f}% ({row['sampler_over_floor']:.1f}x) "
                  f"| {100 * row['mafd']:.2f}% ({row['mafd_over_floor']:.1f}x) |")
    statistics = list(report["scorecard"]["reference"]["statistics"])
    print("| solve | worst | " + " | ".join(statistics) + " |")
    print("| --- | --- |" + " --- |" * len(statistics))
    for name, card in report["scorecard"].items():
        print(f"| {name} | {card['worst']['statistic']} {card['worst']['over_floor']:.2f}x | "
              + " | ".join(f"{row['distance']:.3g} ({row['over_floor']:.2f}x)" for row in card["statistics"].values()) + " |")
    print("| fields | var delta | var ln(1 + delta) | delta 99% | delta 99.9% |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in report["one_point"].items():
        print(f"| {name} | {row['var_delta']:.4f} | {row['var_log']:.4f} | {row['delta_q0.99']:.3f} | "
              f"{row['delta_q0.999']:.3f} |")
    if "reference_check" in report:
        check = report["reference_check"]
        print(f"reference doubled ({check['doubled']}) moves it by "
              + ", ".join(f"{value:.2f}x the floor ({space})" for space, value in check["moved_over_floor"].items())
              + (": converged" if check["converged"] else ": NOT converged"))
