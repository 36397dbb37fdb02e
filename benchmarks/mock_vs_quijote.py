"""Figure: the embedded 2LPT mock fields beside real Quijote slices, with both power spectra.

    python benchmarks/mock_vs_quijote.py [--quijote ../shared/quijote-png-sample] [--out images/mock_vs_quijote.png]
"""
import argparse
from pathlib import Path

import numpy as np

from cosmodiff import plots
from cosmodiff.cli import ArgumentParser
from cosmodiff.fields import load_fields
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.stats import power_spectrum
from cosmodiff.repository import ROOT


def main(args):
    train_path, _ = ensure_split(SPLIT_FOLDERS["2lpt"], "2lpt")
    mock = load_fields(train_path)
    quijote = load_fields(args.quijote, colormap="gnuplot")
    sets = {f"2LPT mock, {mock.box_size:.0f} Mpc/h, {mock.image_size} px": mock.fields[::97][:4],
            f"Quijote, {quijote.box_size:.0f} Mpc/h, {quijote.image_size} px": quijote.fields[:4]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plots.side_by_side(sets, args.out)
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4.5))
    for name, fieldset in (("2LPT mock (default data)", mock), ("Quijote slices", quijote)):
        k, pk, _ = power_spectrum(fieldset.fields[:256], fieldset.box_size)
        keep = k <= np.pi * fieldset.image_size / fieldset.box_size
        ax.loglog(k[keep], pk.mean(axis=0)[keep], label=name)
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P(k) [(Mpc/h)$^2$]")
    ax.legend()
    spectra = Path(args.out).with_name(Path(args.out).stem + "_pk.png")
    plots.save(figure, spectra)
    print(f"Wrote {args.out} and {spectra}")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quijote", default=str(ROOT.parent / "shared" / "quijote-png-sample"))
    parser.add_argument("--out", default=str(ROOT / "images" / "mock_vs_quijote.png"))
    main(parser.parse_args())
