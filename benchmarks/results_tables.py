"""The tables of the README and docs/results.md made from benchmarks/results/*.json: each table sits between
`<!-- table: NAME -->` and `<!-- end table -->`, and TABLES says which results file and which rows
make it. Run after a benchmark writes its results; --check exits 1 (and writes nothing) where a table
differs from its results.

    python benchmarks/results_tables.py [--check] [--doc README.md docs/results.md] [--results benchmarks/results]
"""
import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path

import numpy as np

from cosmodiff.cli import ArgumentParser
from cosmodiff.diffusion import parse_setting
from cosmodiff.repository import ROOT
from cosmodiff.stats import STATISTICS

SCORECARD_LABELS = {"pk_mafd": "P(k)", "log_pk_mafd": "ln(1+delta) P(k)", "bispectrum": "bispectrum",
                    "bispectrum_equilateral": "equilateral", "bispectrum_squeezed": "squeezed", "peaks": "peaks",
                    "pixel_pdf": "pixel PDF", "minkowski": "Minkowski", "pk_correlation": "P(k) correlation"}


def fidelity_scorecard(rows):
    """The scorecard: one line per row of fidelity.json (the sampler's solve where there is one, else the reference)."""
    chosen = {}
    for row in rows:
        if row.get("floor_by") and row.get("scorecard"):
            key = (row["recipe"], row["step"])
            if key not in chosen or row["solve"] == "sampler":
                chosen[key] = row
    lines = ["| recipe | steps | CPU-min | test | NFE | worst / floor | " + " | ".join(STATISTICS) + " |",
             "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(STATISTICS)]
    for row in sorted(chosen.values(), key=lambda row: row["worst_over_floor"]):
        cells = [f"{row['scorecard'][name]:.2f}" if name in row["scorecard"] else "-" for name in STATISTICS]
        lines.append(f"| `{row['recipe']}` | {row['step']} | {row['cpu_minutes']:.1f} | {row.get('test', '-')} | "
                     f"{row['nfe']} | **{row['worst_over_floor']:.2f}** ({row['worst_statistic']}) | " + " | ".join(cells) + " |")
    return lines


README_MODELS = [  # the README's results: (fidelity.json recipe, model, its training)
    ("pm-sqrt-kloss-3000", "`pretrained/pm-sqrt-kloss`", "`--transform sqrt --loss_k_power 1`, wsd, lr 1e-3, 3000 steps"),
    ("default-400", "`accelerate launch train.py` (the default)", "400 steps"),
    ("sqrt-kloss-400", "the shipped recipe's flags at the default's 400 steps", "`--transform sqrt --loss_k_power 1`, 400 steps"),
]


def readme_scorecard(rows, models=README_MODELS):
    """The README's table: each model's scorecard over the floors by simulation and its worst statistic."""
    by_recipe = {row["recipe"]: row for row in rows if row.get("floor_by") and row.get("scorecard")}
    lines = ["| model | training | CPU-min | worst / floor | P(k) | ln(1+delta) P(k) | bispectrum: equilateral, squeezed | "
             "peaks | pixel PDF | Minkowski | P(k) correlation |", "|" + " --- |" * 11]
    for recipe, model, training in models:
        row = by_recipe[recipe]
        card = row["scorecard"]
        worst = SCORECARD_LABELS[row["worst_statistic"]]
        worst = {"equilateral": "equilateral bispectrum", "squeezed": "squeezed bispectrum"}.get(worst, worst)
        lines.append(f"| {model} | {training} | {row['cpu_minutes']:.1f} | **{row['worst_over_floor']:.2f}** ({worst}) | "
                     f"{card['pk_mafd']:.2f} | {card['log_pk_mafd']:.2f} | {card['bispectrum_equilateral']:.2f}, "
                     f"{card['bispectrum_squeezed']:.2f} | {card['peaks']:.2f} | {card['pixel_pdf']:.2f} | "
                     f"{card['minkowski']:.2f} | {card['pk_correlation']:.2f} |")
    return lines


def fidelity_refloored(rows):
    """The reference solves measured over the old floors: MAFD and bispectrum over the old floor and over the floor by simulation."""
    lines = ["| recipe | steps | CPU-min | MAFD / old floor | MAFD / floor by simulation | log space (old, by simulation) | "
             "bispectrum (old, by simulation) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "honest" not in row or row["solve"] != "reference":
            continue
        honest = row["honest"]
        bispectrum = "-"
        if "beyond_over_floor" in honest:
            bispectrum = f"{row['beyond_over_floor']['bispectrum']:.1f}, {honest['beyond_over_floor']['bispectrum']:.1f}"
        lines.append(f"| `{row['recipe']}` | {row['step']} | {row['cpu_minutes']:.1f} | {row['mafd_over_floor']:.2f} | "
                     f"{honest['mafd_over_floor']:.2f} | {row['log_mafd_over_floor']:.2f}, {honest['log_mafd_over_floor']:.2f} | "
                     f"{bispectrum} |")
    return lines


BEYOND_OLD_FLOORS = ("bispectrum", "peaks", "pixel_pdf", "pk_correlation")  # the statistics of rows before the scorecard


def floors_validated(rows):
    """The floors' check on simulations no floor came from: median distance over floor [5-95%] per check and statistic."""
    checks = {}
    for row in rows:
        checks.setdefault(row["description"], {})[row["statistic"]] = row
    lines = ["| check | " + " | ".join(SCORECARD_LABELS[name] for name in STATISTICS) + " |",
             "|" + " --- |" * (1 + len(STATISTICS))]
    for description, by_statistic in checks.items():
        cells = [f"{by_statistic[name]['median_over_floor']:.2f} [{by_statistic[name]['low']:.2f}, "
                 f"{by_statistic[name]['high']:.2f}]" for name in STATISTICS]
        lines.append(f"| {description} | " + " | ".join(cells) + " |")
    return lines


def study_rows(rows, recipe, solve, setting):
    """One recipe's rows of fidelity.json for one solve at one sampler:steps:grid setting, by CPU-minutes."""
    sampler, steps, grid = parse_setting(setting)
    return sorted((row for row in rows if row["recipe"] == recipe and row["solve"] == solve and
                   (row["sampler"], row["steps"], row["grid"]) == (sampler, steps, grid)),
                  key=lambda row: row["cpu_minutes"])


def convergence_study(rows, recipes, solves):
    """Each recipe's MAFD through its step budgets, per solve ((solve, setting) pairs), split into the
    model's and the sampler's error."""
    lines = ["| recipe | solve | NFE | CPU-min | MAFD | floor | MAFD/floor | model error/floor | sampler error/floor |",
             "|" + " --- |" * 9]
    for recipe in recipes:
        for solve, setting in solves:
            for row in study_rows(rows, recipe, solve, setting):
                lines.append(f"| {recipe} | {row['sampler']} {row['steps']} ({row['grid']}) | {row['nfe']} | "
                             f"{row['cpu_minutes']:.1f} | {100 * row['mafd']:.2f}% | {100 * row['floor_median']:.2f}% | "
                             f"{row['mafd_over_floor']:.2f} | {row['model_error'] / row['floor_median']:.2f} | "
                             f"{row['sampler_error'] / row['floor_median']:.2f} |")
    return lines


def fitted_rate(minutes, ratios):
    """(a, b) of MAFD/floor = a * minutes^-b, least squares in log-log."""
    slope, intercept = np.polyfit(np.log(minutes), np.log(ratios), 1)
    return float(np.exp(intercept)), float(-slope)


def convergence_fits(rows, recipes, solves):
    """The power law MAFD/floor = a t^-b fitted to each recipe's budgets per solve, and where it reaches 1.2x."""
    lines = ["```"]
    for recipe in recipes:
        for solve, setting in solves:
            chosen = study_rows(rows, recipe, solve, setting)
            if len(chosen) < 2:
                continue
            a, b = fitted_rate([row["cpu_minutes"] for row in chosen], [row["mafd_over_floor"] for row in chosen])
            reach = f"{(1.2 / a) ** (-1 / b):.3g} CPU-minutes" if b > 0 else "never (no decrease)"
            lines.append(f"{recipe}, {setting}: MAFD/floor = {a:.2f} t^({-b:+.3f}), t in CPU-minutes; "
                         f"1.2x the floor at {reach}")
    return lines + ["```"]


def model_errors(rows, recipes):
    """The model error (reference solve) of each recipe's budgets over the floors of random halves, overall,
    per k band and, where the rows have them, the statistics beyond P(k) (each over its floor)."""
    chosen = sorted((row for row in rows if row["solve"] == "reference" and row["recipe"] in recipes
                     and not row.get("floor_by")), key=lambda row: (row["recipe"], row["cpu_minutes"]))
    beyond = {row["recipe"]: row.get("beyond_over_floor", {}) for row in chosen}
    header = "| recipe | steps | CPU-min | model error / floor, delta | per k band (< 0.1, 0.1-0.4, 0.4-Nyquist) | log space |"
    if any(beyond.values()):
        header += " beyond P(k): " + ", ".join(BEYOND_OLD_FLOORS) + " |"
    lines = [header, "|" + " --- |" * (header.count(" | ") + 1)]
    for row in chosen:
        bands = ", ".join(f"{value:.1f}" for value in row["band_mafd_over_floor"].values())
        line = (f"| {row['recipe']} | {row['step']} | {row['cpu_minutes']:.1f} | {row['mafd_over_floor']:.2f} | "
                f"{bands} | {row['log_mafd_over_floor']:.2f} |")
        if any(beyond.values()):
            values = row.get("beyond_over_floor", {})
            line += " " + (", ".join(f"{values[name]:.1f}" for name in BEYOND_OLD_FLOORS) if values else "-") + " |"
        lines.append(line)
    return lines


NONLINEAR_LEVERS = {
    "nl-wsd": "none (baseline)",
    "nl-whitened": "equal-SNR diffusion (`--transform log-whitened`)",
    "nl-kloss": "Fourier-weighted loss (`--loss_k_power 1`)",
    "nl-unet-m": "capacity: twice the width at every resolution (`--model unet-m`, 720 steps)",
    "nl-kloss-long": "Fourier-weighted loss, longer (`--loss_k_power 1`, 3200 steps)",
    "nl-dit": "the DiT with its convolutional stem and head (`--model dit-xs/4 --lr 5e-4`, 4800 steps)",
    "nl-sqrt": "the square root of the density as model space (`--transform sqrt`, 2000 steps)",
    "nl-sqrt-kloss": "both: the square root with the Fourier-weighted loss (`--transform sqrt --loss_k_power 1`, 2000 steps)",
    "nl-sqrt-kloss-long": "both, longer (`--transform sqrt --loss_k_power 1`, 3000 steps)",
    "nl-sqrt-k2": "the square root with the loss at |k|^2 (`--transform sqrt --loss_k_power 2`, 3000 steps)",
    "large-wsd-nonlinear": "more simulations and steps (`large-nonlinear`, 96 simulations, 3000 steps, 2 threads)",
}
def nonlinear_levers(rows):
    """The levers on particle-mesh data, solved by UniPC 20 log-grid steps, each statistic over its floor of
    the time (random halves), the lowest of each column in bold."""
    chosen = {}
    for row in rows:
        if (row["recipe"] in NONLINEAR_LEVERS and not row.get("floor_by")
                and (row["sampler"], row["steps"], row["grid"]) == ("unipc", 20, "log")):
            if row["recipe"] not in chosen or row["solve"] == "reference":
                chosen[row["recipe"]] = row
    chosen = [chosen[recipe] for recipe in NONLINEAR_LEVERS if recipe in chosen]
    columns = [[row["mafd_over_floor"] for row in chosen], *zip(*[row["band_mafd_over_floor"].values() for row in chosen]),
               [row["log_mafd_over_floor"] for row in chosen],
               *([row.get("beyond_over_floor", {}).get(name) for row in chosen] for name in BEYOND_OLD_FLOORS)]
    digits = [2, 1, 1, 1, 2, 1, 1, 1, 1]
    cells = [[None] * len(columns) for _ in chosen]
    for c, (column, places) in enumerate(zip(columns, digits)):
        best = min(round(value, places) for value in column if value is not None)
        for r, value in enumerate(column):
            text = "-" if value is None else f"{value:.{places}f}"
            cells[r][c] = f"**{text}**" if value is not None and round(value, places) == best else text
    lines = ["| lever | recipe | CPU-min | MAFD / floor | k < 0.1 | 0.1-0.4 | 0.4-Nyquist | log space | bispectrum | "
             "peaks | PDF | P(k) correlation |", "|" + " --- |" * 12]
    for row, row_cells in zip(chosen, cells):
        lines.append(f"| {NONLINEAR_LEVERS[row['recipe']]} | `{row['recipe']}` | {row['cpu_minutes']:.1f} | "
                     + " | ".join(row_cells) + " |")
    return lines


def conditional_scorecard(records):
    """The conditional emulator's scorecard on held-out cosmologies: median and worst point."""
    scorecard = records[0]["holdout"]["scorecard"]
    lines = ["| statistic over its floor | median over the 20 points | worst point |", "| --- | --- | --- |"]
    lines += [f"| {SCORECARD_LABELS[name]} | {row['median']:.2f} | {row['worst']:.2f} |"
              for name, row in scorecard.items()]
    return lines


def conditional_fisher(records):
    """The emulator's Fisher errors and derivatives against the simulations', per guidance weight."""
    lines = ["| guidance W | sigma(Omega_m) emulated / simulated | sigma(sigma_8) emulated / simulated | "
             "d ln P / d Omega_m, median error | d ln P / d sigma_8, median error |", "| --- | --- | --- | --- | --- |"]
    for row in records[0]["fisher"]:
        label = {2.0: "2 (the default)", 1.0: "1 (the conditional model alone)"}.get(row["guidance"], f"{row['guidance']:g}")
        errors = row["derivative_median_relative_error"]
        lines.append(f"| {label} | {row['sigma_ratio']['Omega_m']:.2f} | {row['sigma_ratio']['sigma_8']:.2f} | "
                     f"{100 * errors['Omega_m']:.0f}% | {100 * errors['sigma_8']:.0f}% |")
    return lines


def train_throughput(records):
    """Images per second of train.py's loop, plain and with each option."""
    record = records[-1]
    lines = ["| train.py flags | images/s | over the plain loop | first 10 steps (s) |", "| --- | --- | --- | --- |",
             f"| (plain) | {record['images_per_s']:.2f} | 1 | {record['warmup_s']:.0f} |"]
    for variant in record["variants"]:
        flags = f"`{variant['flags']}`"
        if variant["flags"] == "--precision auto" and not record["cpu_bf16_units"]:
            flags += " (fp32 here: no bf16 units)"
        ratio = f"**{variant['ratio']:.2f}**" if variant["ratio"] == max(v["ratio"] for v in record["variants"]) \
            else f"{variant['ratio']:.2f}"
        lines.append(f"| {flags} | {variant['images_per_s']:.2f} | {ratio} | {variant['warmup_s']:.0f} |")
    return lines


def emulated_inference(record):
    """The NPEs trained on simulations and on emulated fields, judged on real test fields (corrections
    fitted on the calibration fields), one row per training set, correction and parameter."""
    lines = ["| training set | fields (cosmologies) | CPU-s / field | correction | parameter | 68% | 95% | SBC KS p | "
             "offset / sigma | FoM vs P(k) | FoM vs simulations |", "|" + " --- |" * 11]
    for row in record["rows"]:
        _, _, correction = row["method"].partition(", ")
        versus = "-" if row["fom_vs_simulations"] is None else f"{row['fom_vs_simulations']:.2f}"
        lines.append(f"| {row['training_set']} | {row['training_fields']} ({row['training_cosmologies']}) | "
                     f"{row['cpu_seconds_per_training_field']:.2f} | {correction or 'none'} | {row['parameter']} | "
                     f"{100 * row['coverage_68']:.0f}% | {100 * row['coverage_95']:.0f}% | {row['sbc_ks_p']:.2g} | "
                     f"{row['offset_over_sigma']:+.2f} | {row['fom_vs_power_spectrum']:.2f} | {versus} |")
    return lines


POSTERIOR_COLUMNS = {  # a benchmarks/inference.py row's column: its header and its cell
    "fields": ("fields", lambda row: f"{row['fields']}"),
    "coverage_68": ("68% coverage", lambda row: f"{100 * row['coverage_68']:.0f}%"),
    "coverage_95": ("95% coverage", lambda row: f"{100 * row['coverage_95']:.0f}%"),
    "offset": ("mean offset / sigma", lambda row: f"{row['offset_over_sigma']:+.2f}"),
    "sbc": ("SBC KS p", lambda row: f"{row['sbc_ks_p']:.2g}"),
    "tarp_atc": ("TARP ATC", lambda row: f"{row['tarp_atc']:+.3f}"),
    "tarp_ks": ("TARP KS p", lambda row: f"{row['tarp_ks_p']:.2g}"),
    "abs_bias": ("abs bias / sigma", lambda row: f"{row['abs_bias_over_sigma']:.2f}"),
    "width": ("68% width", lambda row: f"{row['width_68']:.4f}"),
    "width_vs": ("68% width vs P(k)", lambda row: f"{row['width_68_vs_power_spectrum']:.2f}x"),
    "fom": ("FoM vs P(k)", lambda row: f"{row['fom_vs_power_spectrum']:.2f}"),
    "seconds": ("s / field", lambda row: f"{row['seconds_per_field']:.3g}"),
}


def posterior_headline(records, picks, columns):
    """One line per picked method ((record index, method, label)), each cell its parameters' values joined by
    '; ' (one value where they agree)."""
    lines = ["| method | " + " | ".join(POSTERIOR_COLUMNS[name][0] for name in columns) + " |",
             "|" + " --- |" * (1 + len(columns))]
    for index, method, label in picks:
        rows = [row for row in records[index]["rows"] if row["method"] == method]
        cells = []
        for name in columns:
            values = [POSTERIOR_COLUMNS[name][1](row) for row in rows]
            cells.append(values[0] if len(set(values)) == 1 else "; ".join(values))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def posterior_rows(record, columns):
    """Every row of a benchmarks/inference.py record: one line per method and parameter."""
    lines = ["| method | parameter | " + " | ".join(POSTERIOR_COLUMNS[name][0] for name in columns) + " |",
             "|" + " --- |" * (2 + len(columns))]
    lines += [f"| {row['method']} | {row['parameter']} | " + " | ".join(POSTERIOR_COLUMNS[name][1](row) for name in columns)
              + " |" for row in record["rows"]]
    return lines


MOCK_LABELS = {"2lpt": "2lpt (the default data)", "pm-10": "pm, 10 steps (the `nonlinear` split)", "pm-20": "pm, 20 steps"}


def mock_camb(record):
    """Each mock method's 3D P(k) at z = 0 over CAMB's nonlinear one, how far it stays within tolerance, its cost."""
    tolerance = record["settings"]["tolerance"]
    at = list(next(iter(record["methods"].values()))["ratio_at"])
    lines = [f"| method | P / CAMB nonlinear at k = {', '.join(at)} h/Mpc | every bin within {100 * tolerance:.0f}% "
             "(or 2 sigma of sample variance) up to | CPU-s per simulation |", "| --- | --- | --- | --- |"]
    for name, method in record["methods"].items():
        lines.append(f"| {MOCK_LABELS.get(name, name)} | {', '.join(f'{value:.3f}' for value in method['ratio_at'].values())} | "
                     f"{method['within_5_percent_to_k']:.2f} h/Mpc | {method['cpu_seconds_per_sim']:.1f} |")
    return lines


def mock_quijote(record):
    """Each mock method's rendered slabs against the Quijote PNG slices: 2D P(k) ratio, PDF distance, tail, clip."""
    slabs = record["quijote_slabs"]
    quijote = slabs["quijote"]
    at = list(next(iter(slabs["methods"].values()))["ratio_at"])
    lines = [f"| method | 2D P / Quijote at k = {', '.join(at)} h/Mpc | largest deviation, 0.1-1.0 h/Mpc | PDF total "
             f"variation (Quijote's two halves: {quijote['halves_total_variation']:.3f}) | 99% / 99.9% quantile / mean "
             f"(Quijote {quijote['quantiles']['0.99']:.2f} / {quijote['quantiles']['0.999']:.2f}) | at the clip (Quijote "
             f"{100 * quijote['clipped_fraction']:.2f}%) |", "|" + " --- |" * 6]
    for name, method in slabs["methods"].items():
        lines.append(f"| {MOCK_LABELS.get(name, name)} | {', '.join(f'{value:.3f}' for value in method['ratio_at'].values())} | "
                     f"{100 * method['largest_deviation_0p1_to_1']:.1f}% | {method['total_variation']:.3f} | "
                     f"{method['quantiles']['0.99']:.2f} / {method['quantiles']['0.999']:.2f} | "
                     f"{100 * method['clipped_fraction']:.3g}% |")
    return lines


def fidelity_summaries(rows):
    """benchmarks/fidelity.py's summaries, one line each: MAFD over its floor and the one-point checks."""
    lines = ["| experiment | data | steps | train CPU-min | sampler (NFE) | MAFD | floor | MAFD / floor | pixel PDF KS | "
             "PDF bins in 1-sigma | Minkowski V0 / V1 / V2 in 1-sigma |", "|" + " --- |" * 11]
    for row in rows:
        minkowski = " / ".join(f"{100 * row['minkowski_within_1sigma'][name]:.0f}%" for name in ("v0", "v1", "v2"))
        pdf_bins = next(target["measured"] for target in row["targets"] if target["name"].startswith("pixel PDF"))
        lines.append(f"| {row['name']} | {row['data']} | {row['train_steps']} | {row['train_cpu_minutes']:.1f} | "
                     f"{row['sampler']} {row['steps']} {row['grid']} ({row['network_evaluations']}) | "
                     f"{100 * row['mafd']:.2f}% | {100 * row['floor']['median']:.2f}% | {row['mafd_over_floor']:.2f} | "
                     f"{row['pixel_pdf_ks']:.3f} | {pdf_bins} | {minkowski} |")
    return lines


def with_bands(row, key="mafd_over_floor"):
    """A row's distance over its floor with its three k bands in brackets."""
    bands = ", ".join(f"{value:.1f}" for value in row["band_" + key].values())
    return f"{row[key]:.2f} ({bands})"


def errors_by_data(rows, recipes):
    """The model error (reference solve) of one recipe per data set ((label, recipe) pairs), over the floors
    of random halves."""
    lines = ["| data | recipe | steps | model error / floor, delta (< 0.1, 0.1-0.4, 0.4-Nyquist) | log space |",
             "|" + " --- |" * 5]
    for label, recipe in recipes:
        row = next(row for row in rows if row["recipe"] == recipe and row["solve"] == "reference" and not row.get("floor_by"))
        lines.append(f"| {label} | {recipe} | {row['step']} | {with_bands(row)} | {row['log_mafd_over_floor']:.2f} |")
    return lines


def sampled_by_data(rows, recipes, setting):
    """One recipe per data set ((label, recipe) pairs) sampled at one setting: its MAFD, the model error of
    the reference solve and the sampler's error, each over the floor of random halves."""
    sampler, steps, grid = parse_setting(setting)
    lines = [f"| data | recipe | steps | MAFD / floor, {sampler} {steps} {grid} (< 0.1, 0.1-0.4, 0.4-Nyquist h/Mpc) | "
             "model error / floor (same bands) | log space | sampler error / floor |", "|" + " --- |" * 7]
    for label, recipe in recipes:
        row = max((row for row in rows if row["recipe"] == recipe and row["solve"] == "sampler" and not row.get("floor_by")
                   and (row["sampler"], row["steps"], row["grid"]) == (sampler, steps, grid)), key=lambda row: row["step"])
        reference = next(other for other in rows if other["recipe"] == recipe and other["solve"] == "reference"
                         and other["step"] == row["step"] and not other.get("floor_by"))
        lines.append(f"| {label} | {recipe} | {row['step']} | {with_bands(row)} | {with_bands(reference)} | "
                     f"{reference['log_mafd_over_floor']:.2f} | {row['sampler_error'] / row['floor_median']:.2f} |")
    return lines


def grid_checks(records, grids):
    """How far the ELBO posterior's mean and sigma move from each coarse grid (one record each, its size in
    grids) to the refined one, in sigma, read off the grid as it is and by cubic interpolation (largest over
    the fields; Omega_m / sigma_8)."""
    lines = ["| coarse grid | grid as it is: mean | sigma | cubic interpolation: mean | sigma |", "|" + " --- |" * 5]
    for grid, record in zip(grids, records):
        check = record["grid_check"]
        cells = [" / ".join(f"{check[read][name][move]:.2g}" for name in check[read])
                 for read in ("grid", "cubic_interpolation") for move in ("mean_move_over_sigma", "sigma_move_over_sigma")]
        lines.append(f"| {grid} | " + " | ".join(cells) + " |")
    return lines


def sampler_accuracy(record):
    """Each formulation's samplers with the exact denoiser of Gaussian fields: the relative power error per spread."""
    spreads = list(record["rows"][0]["power_error"])
    lines = ["| formulation | sampler | NFE | " + " | ".join(f"power error, s = {float(spread):g}" for spread in spreads) + " |",
             "|" + " --- |" * (3 + len(spreads))]
    for row in record["rows"]:
        lines.append(f"| {row['formulation']} | {row['sampler']} {row['steps']} ({row['grid']}) | {row['nfe']} | "
                     + " | ".join(f"{100 * error:+.1f}%" for error in row["power_error"].values()) + " |")
    return lines


def recorded_table(record, name):
    """A table of earlier_studies.json: the cells as the study's script printed them."""
    table = record["tables"][name]
    return ["| " + " | ".join(table["columns"]) + " |", "|" + " --- |" * len(table["columns"])] + \
        ["| " + " | ".join(row) + " |" for row in table["rows"]]


def cuda_check(record):
    """Training and sampling speed of the default UNet on one GPU, fp32 against bf16."""
    train, sample = record["train_images_per_s"], record["sample_seconds_per_field"]
    return ["| | fp32 | bf16 |", "| --- | --- | --- |",
            f"| training, default UNet, 64x64, batch 16 (images/s) | {train['no']:.1f} | {train['bf16']:.1f} |",
            f"| sampling, UniPC 20 steps, batch 128 (ms per field) | {1000 * sample['no']:.1f} | "
            f"{1000 * sample['bf16']:.1f} |"]


def elbo_spread(record):
    """The ELBO posterior's spread over noise seeds per levels:draws setting: the standard deviation of the
    posterior mean over seeds over the mean posterior sigma, median (largest) over the fields, the
    smallest median in bold."""
    rows = sorted(record["rows"], key=lambda row: row["evaluations_per_field"])
    names = list(rows[0]["spread_over_sigma"])
    best = {name: min(row["spread_over_sigma"][name]["median"] for row in rows) for name in names}
    lines = ["| levels:draws | network evaluations / field | " + " | ".join(f"{name} spread / sigma" for name in names)
             + " |", "|" + " --- |" * (2 + len(names))]
    for row in rows:
        cells = []
        for name in names:
            spread = row["spread_over_sigma"][name]
            median = f"{spread['median']:.2f}"
            cells.append(f"{f'**{median}**' if spread['median'] == best[name] else median} (max {spread['max']:.2f})")
        lines.append(f"| {row['setting']} | {row['evaluations_per_field']} | " + " | ".join(cells) + " |")
    return lines


def settings_reach(records):
    """How far train.py's settings travel: the package modules that receive or read them, the climbs back
    up, and whether loading a run folder imports the flag parser or the simulation code."""
    record = records[-1]
    loads = "; ".join(f"`{name}`: {'imports' if found['flag_parser'] else 'no'} flag parser, "
                      f"{'imports' if found['mock'] else 'no'} mock code"
                      for name, found in record["loading_imports"].items())
    modules = ", ".join(f"`{module}` ({reads})" for module, reads in record["by_module"].items())
    return ["| package modules | receive or read the settings | climbs back up | reads | loading a run folder |",
            "| --- | --- | --- | --- | --- |",
            f"| {record['modules_in_package']} | {record['modules_visited']}: {modules} | {record['climbs']} | "
            f"{record['reads']} | {loads} |"]


# table name -> (results file, or a tuple of them, and the rows maker)
CONVERGENCE_RECIPES = ["large-constant", "large-wsd"]
CONVERGENCE_SOLVES = [("reference", "dpm++3m:40:log"), ("sampler", "dpm++3m:20:log"), ("sampler", "unipc:20:log")]
LEVERS_ON_2LPT = ["large-constant", "default", "default-no-ema", "recipe-2lpt", "recipe-2lpt-no-ema",
                  "default-constant-lr2e-3", "default-min-snr", "recipe-nonlinear", "default-400",
                  "default-constant-lr2e-3-400", "large-lr2e-3", "large-wsd", "large-wsd-stable", "default-wsd-400"]
INFERENCE_NONLINEAR = [  # (index in the table's files, method, label)
    (0, "P(k) Gaussian likelihood", "P(k) Gaussian likelihood"),
    (0, "NPE (P(k) summary)", "NPE (P(k) summary)"),
    (0, "NPE (CNN summary)", "NPE (CNN summary)"),
    (0, "NPE (CNN summary), affine", "NPE (CNN summary), affine"),
    (1, "NPE (CNN summary), affine", "NPE (CNN summary), patience 10, affine"),
    (2, "NPE (CNN summary), affine", "NPE (CNN summary) on the 200 `conditional-nonlinear` simulations, patience 10, affine"),
    (0, "diffusion ELBO", "diffusion ELBO, raw"),
    (0, "diffusion ELBO, tempered", "diffusion ELBO, tempered"),
    (0, "diffusion ELBO, affine", "diffusion ELBO, affine"),
]
CALIBRATED_INFERENCE = [
    (0, "diffusion ELBO", "diffusion ELBO, raw"),
    (0, "diffusion ELBO, sigma >= 3.39", "diffusion ELBO, two highest noise levels (chosen on calibration)"),
    (0, "diffusion ELBO, corrected", "diffusion ELBO, tempered (fitted on calibration)"),
    (0, "P(k) Gaussian likelihood", "P(k) Gaussian likelihood"),
    (0, "NPE (CNN summary)", "NPE (sbi, CNN summary), raw"),
]
TABLES = {
    "readme-scorecard": ("fidelity.json", readme_scorecard),
    "sampler-accuracy": ("sampler_accuracy.json", sampler_accuracy),
    "elbo-grid-check": (("elbo_grid_check_4x16.json", "elbo_grid_check_4x16_grid6.json", "elbo_grid_check_4x16_grid5.json"),
                        partial(grid_checks, grids=[11, 6, 5])),
    "fidelity-by-data": ("fidelity_by_data.json", fidelity_summaries),
    "errors-by-data": ("fidelity.json", partial(errors_by_data, recipes=[("2lpt (default split)", "recipe-2lpt"),
                                                                         ("pm (`nonlinear`)", "recipe-nonlinear")])),
    "sampled-by-data": ("fidelity.json", partial(sampled_by_data, recipes=[("2lpt (`large`)", "large-wsd"),
                                                                           ("pm (`large-nonlinear`)", "large-wsd-nonlinear")],
                                                 setting="unipc:20:log")),
    "mock-camb": ("mock_validation.json", mock_camb),
    "mock-quijote": ("mock_validation.json", mock_quijote),
    "inference-nonlinear": (("inference_nonlinear.json", "inference_nonlinear_npe_patience10.json",
                             "inference_nonlinear_npe_200_simulations.json"),
                            partial(posterior_headline, picks=INFERENCE_NONLINEAR,
                                    columns=["fields", "coverage_68", "coverage_95", "offset", "sbc", "fom", "seconds"])),
    "inference-calibrated": (("inference.json",), partial(posterior_headline, picks=CALIBRATED_INFERENCE,
                                                          columns=["coverage_68", "coverage_95", "width_vs", "seconds"])),
    "inference-calibration": ("inference.json", partial(posterior_rows, columns=[
        "coverage_68", "coverage_95", "sbc", "tarp_atc", "tarp_ks", "abs_bias", "width", "width_vs", "seconds"])),
    "floors-validated": ("floors.json", floors_validated),
    "convergence": ("fidelity.json", partial(convergence_study, recipes=CONVERGENCE_RECIPES, solves=CONVERGENCE_SOLVES)),
    "convergence-fits": ("fidelity.json", partial(convergence_fits, recipes=CONVERGENCE_RECIPES, solves=CONVERGENCE_SOLVES)),
    "levers-2lpt": ("fidelity.json", partial(model_errors, recipes=LEVERS_ON_2LPT)),
    "levers-nonlinear": ("fidelity.json", nonlinear_levers),
    "fidelity-scorecard": ("fidelity.json", fidelity_scorecard),
    "fidelity-refloored": ("fidelity.json", fidelity_refloored),
    "conditional-scorecard": ("conditional_nonlinear.json", conditional_scorecard),
    "conditional-fisher": ("conditional_nonlinear.json", conditional_fisher),
    "emulated-inference": ("npe_emulated.json", emulated_inference),
    "elbo-cpu": ("inference_nonlinear_elbo_cpu.json", partial(posterior_rows, columns=[
        "fields", "coverage_68", "coverage_95", "sbc", "offset", "width_vs", "seconds"])),
    "train-throughput": ("train_throughput.json", train_throughput),
    "settings-reach": ("settings_trace.json", settings_reach),
    "cuda-check": ("cuda_check.json", cuda_check),
    "elbo-spread": ("elbo_variance.json", elbo_spread),
    "elbo-spread-draws": ("elbo_variance_draws.json", elbo_spread),
}
EARLIER_STUDIES = ["fidelity-cpu-budget", "formulations", "formulation-ablations", "conditional-guidance",
                   "conditional-points", "streaming", "sampler-sweep", "data-scale"]
TABLES.update({name: ("earlier_studies.json", partial(recorded_table, name=name)) for name in EARLIER_STUDIES})
MARKED = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def regenerated(text, results):
    """The document with every marked table made afresh from the results folder."""
    def table(match):
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"table '{name}' is not one of {', '.join(TABLES)}")
        files, make = TABLES[name]
        if isinstance(files, tuple):
            rows = make([json.loads((Path(results) / file).read_text()) for file in files])
        else:
            rows = make(json.loads((Path(results) / files).read_text()))
        return match[1] + "\n".join(rows) + "\n" + match[4]
    return MARKED.sub(table, text)


def main(args):
    docs = {Path(doc): Path(doc).read_text() for doc in args.doc}
    made = {doc: regenerated(text, args.results) for doc, text in docs.items()}
    names = {doc: [match["name"] for match in MARKED.finditer(text)] for doc, text in docs.items()}
    if args.check:
        differing = [str(doc) for doc in docs if made[doc] != docs[doc]]
        if differing:
            print(f"{', '.join(differing)}: tables differ from {args.results} (python benchmarks/results_tables.py)",
                  file=sys.stderr)
            return 1
        for doc in docs:
            print(f"{doc}: {len(names[doc])} tables match their results ({', '.join(names[doc])})")
        return 0
    for doc in docs:
        doc.write_text(made[doc])
        print(f"{doc}: {len(names[doc])} tables written ({', '.join(names[doc])})")
    return 0


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 where a table differs from its results")
    parser.add_argument("--doc", nargs="+", default=[str(ROOT / "README.md"), str(ROOT / "docs" / "results.md")],
                        help="the documents whose marked tables are made")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
