"""train.py's flags and the settings they make, in the package so that a run folder's stored
arguments (config.json's train_args) are checked against the ranges of the flags that wrote them when
the folder is read, and so that `cosmodiff.train` takes the same settings, checked the same way."""
import argparse
import dataclasses
from typing import Any

from cosmodiff.cli import ArgumentParser, COUNT, FINITE, FRACTION, INDEX, POSITIVE, Number, checked_numbers, folder_name
from cosmodiff.diffusion import FORMULATIONS, SAMPLERS
from cosmodiff.fields import DEFAULT_MESH
from cosmodiff.launch import PRECISIONS
from cosmodiff.repository import DEFAULT_DATA
from cosmodiff.models import MODELS
from cosmodiff.transforms import DATA_STD, TRANSFORMS


SPIKE_FACTOR = Number(float, 2)  # a loss twice its recent median is already far outside a healthy run's noise


def add_data_flags(group):
    """The flags training_fields reads (train.py, evaluate/train_npe.py)."""
    group.add_argument("--data_path", default=str(DEFAULT_DATA), help="field set (any format load_fields reads, or a "
                       "shard set from cosmodiff.prepare, streamed from disk); a folder with train.npz trains on it; "
                       "the default data is generated on first use")
    group.add_argument("--colormap", default=None, help="invert colormapped PNGs, e.g. gnuplot (the earlier work's images)")
    group.add_argument("--slab_thickness", type=COUNT, default=None, help="slices per 2D slab for 3D density cubes")
    group.add_argument("--mesh", type=COUNT, default=DEFAULT_MESH, help="nodes per side Gadget HDF5 snapshots are "
                       "painted on (CIC) before slicing")
    group.add_argument("--box_size", type=POSITIVE, default=None, help="Mpc/h (default: from the data, else 1000)")
    group.add_argument("--image_size", type=COUNT, default=64, help="model resolution; larger fields are block-averaged")
    group.add_argument("--params_file", default=None, help="parameter table joined to the data's simulations, e.g. "
                       "Quijote's latin_hypercube_params.txt (row = simulation index)")


def add_model_flags(model):
    """The network and diffusion formulation flags (what a run's config.json stores)."""
    model.add_argument("--model", default="unet", choices=list(MODELS))
    model.add_argument("--formulation", default="vp", choices=list(FORMULATIONS),
                       help="vp: DDPM, v-prediction; edm: Karras et al. 2022; flow: rectified flow")
    model.add_argument("--condition", default=None, help="condition on these parameters of the data, e.g. "
                       "Omega_m,sigma_8 (default: unconditional)")
    model.add_argument("--cond_drop_prob", type=FRACTION, default=0.1,
                       help="share of training fields without their condition, for classifier-free guidance")
    model.add_argument("--sampling_timesteps", type=COUNT, default=50, help="DDIM steps of the sample grids")
    for formulation in FORMULATIONS.values():  # each formulation's own flags (cosmodiff/diffusion/formulations.py)
        for flag, options in formulation.flags.items():
            model.add_argument(f"--{flag}", **dict(options, help=f"{formulation.name}: {options['help']}"))


def build_parser(description=None):
    """train.py's flags."""
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    add_data_flags(data)
    data.add_argument("--num_workers", type=INDEX, default=1, help="DataLoader worker processes reading fields ahead")
    data.add_argument("--data_std", type=POSITIVE, default=DATA_STD, help="spread of the standardised log density in model space")
    data.add_argument("--transform", default="log", choices=list(TRANSFORMS), help="physical units -> model space: "
                      "log (standardised log density), log-whitened (each |k| scaled to the same power: equal-SNR "
                      "diffusion) or sqrt (standardised square root of the density: peaks less compressed)")
    add_model_flags(parser.add_argument_group("model and diffusion"))
    train = parser.add_argument_group("training")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--train_steps", type=COUNT, default=None, help="optimizer steps (default 400; on resume, the run's)")
    length.add_argument("--train_minutes", type=POSITIVE, default=None,
                       help="as many steps as fit these minutes of training, at the speed of the first 20 steps")
    train.add_argument("--batch_size", type=COUNT, default=16, help="global batch, split over processes")
    train.add_argument("--grad_accum", type=COUNT, default=1)
    train.add_argument("--lr", type=POSITIVE, default=2e-3, help="peak learning rate (runs of thousands of steps: 1e-3)")
    train.add_argument("--lr_schedule", default="constant", choices=["cosine", "constant", "wsd"],
                       help="after the warm-up: constant (the EMA anneals), cosine decay to 10%% at --train_steps, "
                            "or wsd: constant, then linear to zero over the "
                            "last --cooldown_fraction")
    train.add_argument("--cooldown_fraction", type=FRACTION, default=0.2, help="wsd: share of --train_steps spent "
                       "decaying the rate to zero")
    train.add_argument("--warmup_steps", type=COUNT, default=50)
    train.add_argument("--loss_k_power", type=FINITE, default=0.0, help="weight each Fourier mode of the denoising "
                       "error by |k|^p (mean weight 1): p > 0 favours small scales; 0 is the plain pixel loss")
    train.add_argument("--loss_spike", type=SPIKE_FACTOR, default=20.0, help="stop before the update when a step's "
                       "loss exceeds this multiple of the median of the last 100 steps (a diverging run)")
    train.add_argument("--max_grad_norm", type=POSITIVE, default=1.0)
    train.add_argument("--ema_decay", type=FRACTION, default=0.995)
    train.add_argument("--seed", type=INDEX, default=0)
    speed = parser.add_argument_group("speed (may change on --resume)")
    speed.add_argument("--precision", default="accelerate", choices=list(PRECISIONS),
                       help="accelerate: `accelerate launch --mixed_precision`'s setting; auto: bf16 autocast where the "
                            "device has bf16 matrix units (GPUs; CPUs with AMX or AVX-512 BF16), fp32 elsewhere; bf16 "
                            "falls back to fp32 on a CPU without them and says so (config.json records the choice)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the network for training: faster steps "
                       "after minutes of compilation at the first (benchmarks/train_throughput.py measures both)")
    run = parser.add_argument_group("run folder")
    run.add_argument("--results_dir", default="results")
    run.add_argument("--run_name", type=folder_name, default=None, help="default: <time>-<model>")
    run.add_argument("--resume", nargs="?", const="latest", default=None, help="continue the latest run, or the run DIR")
    run.add_argument("--save_every", type=COUNT, default=200, help="checkpoint and sample grid every N steps")
    run.add_argument("--log_every", type=COUNT, default=10)
    run.add_argument("--report_to", default=None, choices=["tensorboard"], help="also log to RUN/tensorboard "
                     "(loss, learning rate, MAFD, samples) with accelerate's tracker")
    check = parser.add_argument_group("fidelity while training (at every --save_every)")
    check.add_argument("--val_path", default=None, help="held-out fields (default: test.npz next to the training data)")
    check.add_argument("--val_samples", type=INDEX, default=32, help="samples per check; 0 switches it off")
    check.add_argument("--val_sampler", default="dpm++", choices=list(SAMPLERS))
    check.add_argument("--val_steps", type=COUNT, default=10)
    return parser


def numeric_flag_types(parser):
    """dest -> Number of every numeric flag of a parser: the declared ranges."""
    return {action.dest: action.type for action in parser._actions if isinstance(action.type, Number)}


def flag_choices(parser):
    """dest -> allowed values of every flag with choices."""
    return {action.dest: list(action.choices) for action in parser._actions if action.choices is not None}


def settings_type(parser):
    """A dataclass with one field per flag of the parser, named as its flag without the dashes, with its
    default (`python train.py --help` says what each sets): what the training loop and config.json's
    train_args hold. Built from the flags of the moment, so a formulation registered later brings its own."""
    return dataclasses.make_dataclass("TrainSettings", [(name, Any, dataclasses.field(default=default))
                                                        for name, default in vars(parser.parse_args([])).items()])


def train_settings(**values):
    """TrainSettings with train.py's defaults, `values` (flag names without dashes) in their place;
    refused as the flags refuse them: unknown names, numbers out of range, values not among the choices."""
    parser = build_parser()
    settings_class = settings_type(parser)
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(settings_class)})
    if unknown:
        raise ValueError(f"unknown training setting {', '.join(unknown)}; the settings are train.py's flags "
                         "(python train.py --help)")
    given = {name: value for name, value in values.items() if value is not None}
    numeric, choices = numeric_flag_types(parser), flag_choices(parser)
    checked_numbers({name: value for name, value in given.items() if name in numeric}, numeric, "training settings")
    for name, value in given.items():
        if name in choices and value not in choices[name]:
            raise ValueError(f"training settings: '{name}' is {value!r}; choose one of {', '.join(map(str, choices[name]))}")
    if "run_name" in given:
        try:
            folder_name(given["run_name"] if isinstance(given["run_name"], str) else "")
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"training settings: 'run_name' {error}") from None
    return settings_class(**values)
