"""The one training configuration: presets, config files and command-line overrides."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from dcgan.errors import DCGANError
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
    raise DCGANError(f"{source}: {name} must be {names}, got {value!r}")


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON file of TrainConfig fields; model fields may be flat or under `model:`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DCGANError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise DCGANError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DCGANError(f"config file {path} must hold a mapping of settings, not {type(raw).__name__}")
    flat = dict(raw)
    nested = flat.pop("model", None) or {}
    if not isinstance(nested, dict):
        raise DCGANError(f"config file {path}: `model` must be a mapping of model settings")
    flat.update(nested)
    return validate_overrides(flat, source=str(path))


def validate_overrides(overrides: dict, source: str) -> dict:
    """Reject unknown keys and wrong types, naming the key and the source."""
    unknown = sorted(set(overrides) - MODEL_FIELDS - TRAIN_FIELDS)
    if unknown:
        raise DCGANError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; known settings are "
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


def check(config: TrainConfig) -> None:
    for name in ("batch_size", "d_steps", "log_every", "sample_every", "checkpoint_every",
                 "snapshot_every", "n_samples", "vanishing_patience"):
        if getattr(config, name) < 1:
            raise DCGANError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.workers < 0:
        raise DCGANError(f"workers must be >= 0, got {config.workers}")
    if config.eval_every < 0 or config.eval_n < 2:
        raise DCGANError(f"eval_every must be >= 0 and eval_n >= 2, got {config.eval_every}, {config.eval_n}")
    for name in ("steps", "epochs"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise DCGANError(f"{name} must be at least 1, got {value}")
    if config.steps is not None and config.epochs is not None:
        raise DCGANError("give either steps or epochs, not both")
    if config.lr <= 0:
        raise DCGANError(f"lr must be positive, got {config.lr}")
    if not (0 <= config.beta1 < 1 and 0 <= config.beta2 < 1):
        raise DCGANError(f"beta1 and beta2 must lie in [0, 1), got {config.beta1}, {config.beta2}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise DCGANError(f"precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if config.on_divergence not in ("stop", "rollback"):
        raise DCGANError(f"on_divergence must be stop or rollback, got {config.on_divergence!r}")
    if not 0 < config.rollback_lr_factor < 1:
        raise DCGANError(f"rollback_lr_factor must lie in (0, 1), got {config.rollback_lr_factor}")
    if not 0 <= config.label_smoothing < 1:
        raise DCGANError(f"label_smoothing must lie in [0, 1), got {config.label_smoothing}")


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


