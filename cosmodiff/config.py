"""Training settings, defined once in the package. Each group (data, model, diffusion, optimisation,
speed, run, validation) is a dataclass whose fields carry their default, their range (a ranges.Number)
or choices, and their help; a formulation adds its own (its `flags`). TrainConfig holds every group's
fields side by side, as a run folder's config.json stores them (train_args), so the training loop reads
`config.lr` and every stored run resumes as it was written. train.py's flags are generated from the
groups (cli.add_settings), `cosmodiff.train` takes the fields as keywords (train_config), and the values
a run folder stores are checked against the same ranges when it is read (setting_ranges)."""
import argparse
import dataclasses
import textwrap
from dataclasses import dataclass, field
from typing import Optional

from cosmodiff.diffusion import FORMULATIONS, SAMPLERS
from cosmodiff.fields import DEFAULT_MESH
from cosmodiff.launch import PRECISIONS
from cosmodiff.models import MODELS
from cosmodiff.ranges import COUNT, FINITE, FRACTION, INDEX, POSITIVE, Number, checked_numbers, folder_name
from cosmodiff.repository import DEFAULT_DATA
from cosmodiff.transforms import DATA_STD, TRANSFORMS

SPIKE_FACTOR = Number(float, 2)  # a loss twice its recent median is already far outside a healthy run's noise
LR_SCHEDULES = ("cosine", "constant", "wsd")


def setting(default, help, kind=None, choices=None, **flag):
    """A settings field: its default, its range (a Number) or choices (a tuple, or a registry whose
    names are read when a parser or a config is made, so an entry added later is a choice), its help,
    and any other option its command-line flag takes (nargs, const, action, exclusive: the name of a
    group of flags of which one at most is given)."""
    return field(default=default, metadata=dict(help=help, kind=kind, choices=choices, flag=flag))


@dataclass
class DataSettings:
    """What the fields are read from (cosmodiff.data.open_data)."""
    data_path: str = setting(str(DEFAULT_DATA), "field set (any format load_fields reads, or a shard set from "
                             "cosmodiff.prepare, streamed from disk); a folder with train.npz trains on it; the "
                             "default data is generated on first use")
    colormap: Optional[str] = setting(None, "invert colormapped PNGs, e.g. gnuplot (the earlier work's images)")
    slab_thickness: Optional[int] = setting(None, "slices per 2D slab for 3D density cubes", COUNT)
    mesh: int = setting(DEFAULT_MESH, "nodes per side Gadget HDF5 snapshots are painted on (CIC) before slicing",
                        COUNT)
    box_size: Optional[float] = setting(None, "Mpc/h (default: from the data, else 1000)", POSITIVE)
    image_size: int = setting(64, "model resolution; larger fields are block-averaged", COUNT)
    params_file: Optional[str] = setting(None, "parameter table joined to the data's simulations, e.g. Quijote's "
                                         "latin_hypercube_params.txt (row = simulation index)")


@dataclass
class ModelSettings:
    """The network and what it is conditioned on."""
    model: str = setting("unet", "the network (a name of cosmodiff.models.MODELS)", choices=MODELS)
    condition: Optional[str] = setting(None, "condition on these parameters of the data, e.g. Omega_m,sigma_8 "
                                       "(default: unconditional)")
    cond_drop_prob: float = setting(0.1, "share of training fields without their condition, for classifier-free "
                                    "guidance", FRACTION)


@dataclass
class DiffusionSettings:
    """The diffusion formulation and the model space it works in (each formulation adds its own settings)."""
    formulation: str = setting("vp", "vp: DDPM, v-prediction; edm: Karras et al. 2022; flow: rectified flow",
                               choices=FORMULATIONS)
    transform: str = setting("log", "physical units -> model space: log (standardised log density), log-whitened "
                             "(each |k| scaled to the same power: equal-SNR diffusion) or sqrt (standardised square "
                             "root of the density: peaks less compressed)", choices=TRANSFORMS)
    data_std: float = setting(DATA_STD, "spread of the standardised log density in model space", POSITIVE)
    sampling_timesteps: int = setting(50, "DDIM steps of the sample grids", COUNT)


@dataclass
class OptimisationSettings:
    """How long and how the network learns."""
    train_steps: Optional[int] = setting(None, "optimizer steps (default 400; on resume, the run's)", COUNT,
                                         exclusive="length")
    train_minutes: Optional[float] = setting(None, "as many steps as fit these minutes of training, at the speed "
                                             "of the first 20 steps", POSITIVE, exclusive="length")
    batch_size: int = setting(16, "global batch, split over processes", COUNT)
    grad_accum: int = setting(1, "micro-batches per optimizer step", COUNT)
    lr: float = setting(2e-3, "peak learning rate (runs of thousands of steps: 1e-3)", POSITIVE)
    lr_schedule: str = setting("constant", "after the warm-up: constant (the EMA anneals), cosine decay to 10% at "
                               "the last step, or wsd: constant, then linear to zero over the last cooldown_fraction",
                               choices=LR_SCHEDULES)
    cooldown_fraction: float = setting(0.2, "wsd: share of the steps spent decaying the rate to zero", FRACTION)
    warmup_steps: int = setting(50, "steps of linear warm-up of the learning rate", COUNT)
    loss_k_power: float = setting(0.0, "weight each Fourier mode of the denoising error by |k|^p (mean weight 1): "
                                  "p > 0 favours small scales; 0 is the plain pixel loss", FINITE)
    loss_spike: float = setting(20.0, "stop before the update when a step's loss exceeds this multiple of the median "
                                "of the last 100 steps (a diverging run)", SPIKE_FACTOR)
    max_grad_norm: float = setting(1.0, "gradient clipping norm", POSITIVE)
    ema_decay: float = setting(0.995, "decay of the exponential moving average of the weights that samples",
                               FRACTION)
    seed: int = setting(0, "seed of the weights, the batches and the noise", INDEX)


@dataclass
class SpeedSettings:
    """How fast the steps run (precision and compile may change when a run resumes)."""
    num_workers: int = setting(1, "DataLoader worker processes reading fields ahead", INDEX)
    precision: str = setting("accelerate", "accelerate: `accelerate launch --mixed_precision`'s setting; auto: bf16 "
                             "autocast where the device has bf16 matrix units (GPUs; CPUs with AMX or AVX-512 BF16), "
                             "fp32 elsewhere; bf16 falls back to fp32 on a CPU without them and says so (config.json "
                             "records the choice)", choices=tuple(PRECISIONS))
    compile: bool = setting(False, "torch.compile the network for training: faster steps after minutes of "
                            "compilation at the first (benchmarks/train_throughput.py measures both)",
                            action="store_true")


@dataclass
class RunSettings:
    """The run folder: where it goes, how often it is written, and resuming it."""
    results_dir: str = setting("results", "the folder run folders are made in")
    run_name: Optional[str] = setting(None, "the run folder's name (default: <time>-<model>)", folder_name)
    resume: Optional[str] = setting(None, "continue the latest run, or the run DIR", nargs="?", const="latest")
    save_every: int = setting(200, "checkpoint and sample grid every N steps", COUNT)
    log_every: int = setting(10, "a row of log.csv every N steps", COUNT)
    report_to: Optional[str] = setting(None, "also log to RUN/tensorboard (loss, learning rate, MAFD, samples) with "
                                       "accelerate's tracker", choices=("tensorboard",))


@dataclass
class ValidationSettings:
    """The fidelity check while training (at every save_every)."""
    val_path: Optional[str] = setting(None, "held-out fields (default: test.npz next to the training data)")
    val_samples: int = setting(32, "samples per check; 0 switches it off", INDEX)
    val_sampler: str = setting("dpm++", "the check's sampler", choices=SAMPLERS)
    val_steps: int = setting(10, "the check's sampler steps", COUNT)


GROUPS = {"data": DataSettings, "model": ModelSettings, "diffusion": DiffusionSettings,
          "optimisation": OptimisationSettings, "speed": SpeedSettings, "run": RunSettings,
          "validation": ValidationSettings}


def formulation_fields():
    """The settings each formulation adds (its `flags`), as (name, type, field) of the diffusion group."""
    return [(name, options["type"].kind if isinstance(options.get("type"), Number) else str,
             setting(options["default"], f"{formulation.name}: {options['help']}", options.get("type"),
                     options.get("choices")))
            for formulation in FORMULATIONS.values() for name, options in formulation.flags.items()]


def fields_of(group):
    """A group's fields, the diffusion group's with the formulations' own."""
    own = [(item.name, item.type, item) for item in dataclasses.fields(GROUPS[group])]
    return own + formulation_fields() if group == "diffusion" else own


def settings_help():
    """Every setting by group, with its default, range or choices and help (cosmodiff.train's docstring)."""
    lines = []
    for group in GROUPS:
        lines.append(f"{group}:")
        for name, _, item in fields_of(group):
            kind, choices = item.metadata["kind"], item.metadata["choices"]
            allowed = f"; {kind.describe()}" if isinstance(kind, Number) else (
                f"; one of {', '.join(choices)}" if choices else "")
            lines.append(textwrap.fill(f"{name} = {item.default!r}{allowed}: {item.metadata['help']}", 100,
                                       initial_indent="    ", subsequent_indent="        "))
    return "\n".join(lines)


def train_config_type():
    """TrainConfig as the registries stand: every group's fields side by side, a formulation's own
    included (made again when a formulation registered later brings its settings)."""
    entries = [entry for group in GROUPS for entry in fields_of(group)]
    names = tuple(name for name, _, _ in entries)
    if names not in CONFIG_TYPES:
        CONFIG_TYPES[names] = dataclasses.make_dataclass(
            "TrainConfig", entries, namespace={"__doc__": "Every training setting (the groups' fields side by side; "
                                                          "config.json's train_args):\n\n" + settings_help()})
    return CONFIG_TYPES[names]


def setting_ranges():
    """Setting name -> its range, for every numeric setting."""
    return {name: item.metadata["kind"] for group in GROUPS for name, _, item in fields_of(group)
            if isinstance(item.metadata["kind"], Number)}


def setting_choices():
    """Setting name -> its allowed values, for every setting with choices."""
    return {name: tuple(item.metadata["choices"]) for group in GROUPS for name, _, item in fields_of(group)
            if item.metadata["choices"]}


CONFIG_TYPES = {}  # the field names -> the TrainConfig made for them


def train_config(**values):
    """A TrainConfig with the defaults, `values` in their place, refused as train.py's flags refuse them:
    unknown names, numbers out of range, values not among the choices, a run name that leaves its folder."""
    config_type = train_config_type()
    unknown = sorted(set(values) - {item.name for item in dataclasses.fields(config_type)})
    if unknown:
        raise ValueError(f"unknown training setting {', '.join(unknown)}; the settings are cosmodiff.TrainConfig's "
                         "fields (help(cosmodiff.train) lists them)")
    given = {name: value for name, value in values.items() if value is not None}
    ranges, choices = setting_ranges(), setting_choices()
    checked_numbers({name: value for name, value in given.items() if name in ranges}, ranges, "training settings")
    for name, value in given.items():
        if name in choices and value not in choices[name]:
            raise ValueError(f"training settings: '{name}' is {value!r}; choose one of "
                             f"{', '.join(map(str, choices[name]))}")
    if "run_name" in given:
        try:
            folder_name(given["run_name"] if isinstance(given["run_name"], str) else "")
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"training settings: 'run_name' {error}") from None
    return config_type(**values)
