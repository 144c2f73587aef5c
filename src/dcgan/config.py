"""The one training configuration: presets, config files and command-line overrides."""

from __future__ import annotations

import json
import math
import re
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from dcgan.augment import parse_policy
from dcgan.data import check_regular_file
from dcgan.errors import DCGANError, describe_os_error
from dcgan.models import ModelConfig

# Architecture presets (paper §3). Each is a set of ModelConfig fields plus training defaults.
PRESETS: dict[str, dict] = {
    # dcgan.torch / pytorch/examples: 4x4 kernels, 512 channels at 4x4, z ~ N(0, 1)
    "pytorch": dict(kernel_size=4, ngf=64, ndf=64, nz=100, projection="conv", latent="normal"),
    # the paper and its official code: 5x5 kernels, 1024 channels at 4x4 for 64x64,
    # linear projection with BN over all units, z ~ U(-1, 1), L2 weight decay 1e-5
    "paper": dict(
        kernel_size=5, ngf=128, ndf=128, nz=100, projection="linear", latent="uniform",
        weight_decay=1e-5,
    ),
    # the 32x32 ImageNet model whose D features give 82.8% on CIFAR-10 (paper §5.1)
    "imagenet32": dict(
        kernel_size=3, ngf=128, ndf=128, nz=256, projection="linear", latent="uniform",
        alternate_strides=True, image_size=32, weight_decay=1e-5,
    ),
}


MAX_CONFIG_BYTES = 1 << 20


@dataclass
class TrainConfig:
    """Every setting of a training run; the run directory's config.json is this, resolved."""

    # data
    data: str = "digits"  # folder of images, or digits | mnist | fashion-mnist | cifar10 | ...
    data_dir: str | None = None  # where a named dataset's files are
    exclude: str | None = None  # text file of image paths to leave out (one per line)
    # model (see ModelConfig; image_size and channels default to the data's own)
    preset: str = "pytorch"
    model: ModelConfig | None = None
    # optimisation (paper §4)
    batch_size: int = 128
    steps: int | None = None  # total G updates; defaults to `epochs` worth
    epochs: int | None = None  # passes over the data when steps is not given (default 25)
    lr: float = 2e-4  # Adam learning rate for both networks
    beta1: float = 0.5  # Adam beta1 (0.9 oscillates, paper §4)
    beta2: float = 0.999
    weight_decay: float = 0.0  # L2, 1e-5 in the paper's code
    label_smoothing: float = 0.0  # one-sided: real target is 1 - label_smoothing
    d_steps: int = 1  # D updates per G update
    augment: str | None = None  # DiffAugment for small datasets: e.g. translation,cutout (off: None)
    seed: int = 0
    device: str = "auto"  # cpu | cuda | cuda:N | mps | auto
    workers: int = 2  # DataLoader processes decoding a streamed dataset (LSUN, large folders)
    # speed (GPU levers; none changes what is learned beyond floating-point rounding)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast; fp16 with one loss scaler per network
    channels_last: bool = True  # NHWC layout: ~1.2x faster convolutions on CPU (oneDNN) and GPU
    compile: bool = False  # torch.compile both networks
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    # sample quality during training (dcgan.metrics)
    eval_every: int = 0  # steps between FID/KID/precision/recall evaluations; 0: never
    eval_features: str = "inception"  # inception, or classifier:PATH from dcgan train-classifier
    eval_n: int = 2000  # generated and real images per evaluation
    inception_weights: str | None = None  # local pt_inception-2015-12-05 file (or $DCGAN_INCEPTION_WEIGHTS)
    # health
    on_divergence: str = "stop"  # non-finite loss: stop, or rollback to the last checkpoint
    rollback_lr_factor: float = 0.5  # each rollback multiplies both learning rates by this
    max_rollbacks: int = 3
    vanishing_loss: float = 0.01  # warn when loss_D stays below this (G's gradient vanishes) ...
    vanishing_patience: int = 200  # ... for this many steps
    collapse_threshold: float = 0.1  # warn when sample diversity / real diversity falls below this
    collapse_after: int = 200  # ... from this step on (an untrained G draws near-constant images)
    # outputs
    out: str | None = None  # run directory; default runs/<data>-<preset>
    log_every: int = 10  # steps between metrics.jsonl / TensorBoard rows
    sample_every: int = 100  # steps between fixed-noise sample grids
    checkpoint_every: int = 100  # steps between writes of checkpoint.pt (the latest)
    snapshot_every: int = 1000  # steps between kept snapshots in snapshots/
    n_samples: int = 64  # images in each sample grid
    tensorboard: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


# Fields a resumed run may change: how long it runs and what it writes, never what it learns.
RESUMABLE_CHANGES = {
    "steps", "epochs", "device", "out", "log_every", "sample_every", "checkpoint_every",
    "snapshot_every", "n_samples", "tensorboard", "data_dir", "lr", "on_divergence",
    "rollback_lr_factor", "max_rollbacks", "vanishing_loss", "vanishing_patience", "collapse_threshold",
    "collapse_after", "precision", "channels_last", "compile", "eval_every", "eval_features", "eval_n",
    "inception_weights", "workers",
}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"model"}


def _check_type(name: str, value, source: str):
    """Coerce int->float where a float is wanted; raise on anything else of the wrong type."""
    hint = typing.get_type_hints(TrainConfig).get(name) or typing.get_type_hints(ModelConfig)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed
           if t is not type(None)):
        return value
    names = " or ".join(t.__name__ for t in allowed)
    raise DCGANError(f"{source}: {name} must be {names}, got {reprlib.repr(value)}")


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON file of TrainConfig fields; model fields may be flat or under `model:`."""
    path = Path(path)
    check_regular_file(path, "config file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise DCGANError(f"cannot read config file {path}: {describe_os_error(e)}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise DCGANError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: it cannot be a "
                         "file of settings")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DCGANError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as e:
        first = " ".join(str(e).split())[:200]
        raise DCGANError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {first}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DCGANError(f"config file {path} must hold a mapping of settings, not {type(raw).__name__}")
    if not all(isinstance(k, str) for k in raw):
        raise DCGANError(f"config file {path}: every setting name must be text, got "
                         f"{reprlib.repr([k for k in raw if not isinstance(k, str)][0])}")
    flat = dict(raw)
    nested = flat.pop("model", None) or {}
    if not isinstance(nested, dict):
        raise DCGANError(f"config file {path}: `model` must be a mapping of model settings")
    if not all(isinstance(k, str) for k in nested):
        raise DCGANError(f"config file {path}: every model setting name must be text")
    flat.update(nested)
    return validate_overrides(flat, source=str(path))


def validate_overrides(overrides: dict, source: str) -> dict:
    """Reject unknown keys and wrong types, naming the key and the source."""
    unknown = sorted(map(str, set(overrides) - MODEL_FIELDS - TRAIN_FIELDS))
    if unknown:
        raise DCGANError(
            f"{source}: unknown setting(s) {reprlib.repr(', '.join(unknown))}; known settings are "
            f"{', '.join(sorted(MODEL_FIELDS | TRAIN_FIELDS))}"
        )
    return {k: _check_type(k, v, source) for k, v in overrides.items()}


def resolve(overrides: dict, data_shape: tuple[int, int] | None = None) -> TrainConfig:
    """Preset defaults, then the data's own size and channels, then explicit overrides.

    `overrides` holds only what the user set (config file merged with command line).
    `data_shape` is (channels, natural image size) of the dataset, when known.
    """
    overrides = validate_overrides(overrides, source="settings")
    preset = overrides.get("preset", TrainConfig.preset)
    if preset not in PRESETS:
        raise DCGANError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    if data_shape is not None:
        channels, size = data_shape
        values.setdefault("channels", channels)
        if "image_size" not in values:
            values["image_size"] = size
    values.update(overrides)
    model = ModelConfig(**{k: v for k, v in values.items() if k in MODEL_FIELDS})
    config = TrainConfig(model=model, **{k: v for k, v in values.items() if k in TRAIN_FIELDS})
    check(config)
    return config


MIN_EVAL_N = 10  # Inception Score's 10 splits; precision/recall need k + 1 = 4 points
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def check(config: TrainConfig) -> None:
    """Every setting in its range, before any work: one error naming the setting and the value."""
    big = 10**9
    for name, maximum in (("batch_size", 2**16), ("d_steps", 100), ("log_every", big), ("sample_every", big),
                          ("checkpoint_every", big), ("snapshot_every", big), ("n_samples", 1024),
                          ("vanishing_patience", big)):
        check_count(getattr(config, name), name, maximum)
    for name, minimum in (("eval_every", 0), ("max_rollbacks", 0), ("collapse_after", 0)):
        check_count(getattr(config, name), name, big, minimum)
    check_count(config.eval_n, "eval_n", 10**6, MIN_EVAL_N)
    check_seed(config.seed, "seed", MAX_SEED)
    check_count(config.workers, "workers", 1024, 0)
    for name in ("steps", "epochs"):
        value = getattr(config, name)
        if value is not None:
            check_count(value, name, big)
    if config.steps is not None and config.epochs is not None:
        raise DCGANError("give either steps or epochs, not both")
    check_number(config.lr, "lr", positive=True)
    check_number(config.weight_decay, "weight_decay")
    check_number(config.vanishing_loss, "vanishing_loss")
    check_number(config.collapse_threshold, "collapse_threshold")
    if not isinstance(config.device, str) or not DEVICE.fullmatch(config.device):
        raise DCGANError(f"device must be cpu, cuda, cuda:N, mps or auto, got {config.device!r}")
    for name in ("data", "out", "exclude", "data_dir", "inception_weights"):
        value = getattr(config, name)
        if isinstance(value, str) and (not value or "\0" in value):
            raise DCGANError(f"{name} must be a non-empty path without NUL characters, got {value!r}")
    if not (config.eval_features == "inception" or config.eval_features.startswith("classifier:")
            and len(config.eval_features) > len("classifier:")):
        raise DCGANError(f"eval_features must be inception or classifier:PATH, got {config.eval_features!r}")
    if not (0 <= config.beta1 < 1 and 0 <= config.beta2 < 1):
        raise DCGANError(f"beta1 and beta2 must lie in [0, 1), got {config.beta1}, {config.beta2}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise DCGANError(f"precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if config.on_divergence not in ("stop", "rollback"):
        raise DCGANError(f"on_divergence must be stop or rollback, got {config.on_divergence!r}")
    if not 0 < config.rollback_lr_factor < 1:
        raise DCGANError(f"rollback_lr_factor must lie in (0, 1), got {config.rollback_lr_factor}")
    parse_policy(config.augment)
    if not 0 <= config.label_smoothing < 1:
        raise DCGANError(f"label_smoothing must lie in [0, 1), got {config.label_smoothing}")


MAX_SEED = 2**63 - 1


def check_seed(seed, name: str = "--seed", maximum: int = MAX_SEED) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= maximum:
        raise DCGANError(f"{name} must be an integer from 0 to {maximum}, got {reprlib.repr(seed)}")
    return seed


def check_count(value, name: str, maximum: int, minimum: int = 1) -> int:
    """An integer setting within [minimum, maximum], the limit named when it is not."""
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise DCGANError(f"{name} must be at least {minimum} and at most {maximum:,} (an integer), "
                         f"got {reprlib.repr(value)}")
    return value


def check_number(value, name: str, minimum: float = 0.0, positive: bool = False) -> float:
    """A finite float >= minimum (> minimum with positive=True)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < minimum or (positive and value == minimum):
        bound = "positive" if positive and minimum == 0 else f"at least {minimum:g}"
        raise DCGANError(f"{name} must be {bound} and finite, got {reprlib.repr(value)}")
    return float(value)


def from_dict(d: dict) -> TrainConfig:
    """Rebuild a resolved config (as stored in config.json or a checkpoint)."""
    d = dict(d)
    model = ModelConfig.from_dict(d.pop("model"))
    return TrainConfig(model=model, **{k: v for k, v in d.items() if k in TRAIN_FIELDS})


def differences(old: TrainConfig, new: TrainConfig, ignore: set[str]) -> list[str]:
    """'name: old -> new' for every setting that differs, model fields included."""
    a = {**{k: v for k, v in old.to_dict().items() if k != "model"}, **old.model.to_dict()}
    b = {**{k: v for k, v in new.to_dict().items() if k != "model"}, **new.model.to_dict()}
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b.get(k)]


