"""The one training configuration: presets, config files and command-line overrides."""

from __future__ import annotations

import functools
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from dcgan.datasets import NAMED, natural_shape
from dcgan.errors import DCGANError, check_regular_file, describe_os_error

__all__ = ["ModelConfig", "PRESETS", "TrainConfig"]  # public: dcgan.NAME

PROJECTIONS = ("conv", "linear")
MAX_CLASSES = 10000
LATENT_PRIORS = ("normal", "uniform")


@dataclass
class ModelConfig:
    """Everything that fixes the shapes of G and D."""

    # each is also a `dcgan train` flag; `shown`: its default there (the preset's or the data's)
    image_size: int = field(default=64, metadata={
        "help": "square side in pixels, a power of two from 16 to 256",
        "shown": "the dataset's; 64 for folders, 32 with the imagenet32 preset"})
    channels: int = field(default=3, metadata={"help": "1 (grey) or 3 (RGB)", "shown": "the dataset's"})
    nz: int = field(default=100, metadata={"help": "dimension of the latent z", "shown": "the preset's"})
    ngf: int = field(default=64, metadata={
        "help": "G width: channels of G's last hidden layer", "shown": "the preset's"})
    ndf: int = field(default=64, metadata={
        "help": "D width: channels of D's first layer", "shown": "the preset's"})
    kernel_size: int = field(default=4, metadata={
        "help": "conv kernel side in pixels: 4 in the Torch lineage, 5 in the paper, 3 for imagenet32",
        "shown": "the preset's"})
    projection: str = field(default="conv", metadata={
        "help": "how z becomes G's 4x4 map: conv (a 4x4 transposed conv) | linear (linear + BN, the paper)",
        "shown": "the preset's"})
    latent: str = field(default="normal", metadata={
        "help": "prior of z: normal N(0, 1) | uniform U(-1, 1) (the paper)", "shown": "the preset's"})
    alternate_strides: bool = field(default=False, metadata={
        "help": "a stride-1 conv beside each stride-2 one (imagenet32; needs an odd kernel)",
        "shown": "the preset's"})
    classes: list | None = field(default=None, metadata={
        "help": "class names of a conditional model (--conditional), read from the data", "flag": False})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        s = self.image_size
        if not isinstance(s, int) or isinstance(s, bool) or s < 16 or s > 256 or s & (s - 1):
            raise DCGANError(
                f"unsupported image size {reprlib.repr(s)}: use a power of two from 16 to 256 "
                "(28x28 data such as MNIST is resized to 32)"
            )
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise DCGANError(f"unsupported channel count {reprlib.repr(self.channels)}: use 1 (grey) or "
                             "3 (RGB)")
        for name, maximum in (("nz", 4096), ("ngf", 4096), ("ndf", 4096), ("kernel_size", 15)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
                raise DCGANError(f"{name} must be a positive integer, at most {maximum}, got "
                                 f"{reprlib.repr(value)}")
        if self.kernel_size < 2:
            raise DCGANError(f"kernel_size must be at least 2, got {self.kernel_size}")
        if self.alternate_strides and self.kernel_size % 2 == 0:
            raise DCGANError(
                f"alternate_strides needs an odd kernel_size (stride-1 layers keep the size only "
                f"with symmetric padding), got {self.kernel_size}"
            )
        if not isinstance(self.alternate_strides, bool):
            raise DCGANError(f"alternate_strides must be true or false, got "
                             f"{reprlib.repr(self.alternate_strides)}")
        if not isinstance(self.projection, str) or self.projection not in PROJECTIONS:
            raise DCGANError(f"projection must be one of {PROJECTIONS}, got {reprlib.repr(self.projection)}")
        if not isinstance(self.latent, str) or self.latent not in LATENT_PRIORS:
            raise DCGANError(f"latent must be one of {LATENT_PRIORS}, got {reprlib.repr(self.latent)}")
        if self.classes is not None and not (
                isinstance(self.classes, list) and 2 <= len(self.classes) <= MAX_CLASSES
                and all(isinstance(c, str) and c for c in self.classes)
                and len(set(self.classes)) == len(self.classes)):
            raise DCGANError(f"classes must be a list of 2 to {MAX_CLASSES} distinct class names, got "
                             f"{reprlib.repr(self.classes)}")

    @property
    def num_classes(self) -> int:
        """K of a class-conditional model; 0 for an unconditional one."""
        return len(self.classes) if self.classes else 0

    @property
    def levels(self) -> int:
        """Number of 2x resolution changes between 4x4 and the image size."""
        return int(math.log2(self.image_size)) - 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise DCGANError(f"a model configuration must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


AUGMENTATIONS = ("color", "translation", "cutout")


@functools.lru_cache(maxsize=16)  # the training step asks for it every step
def parse_policy(text: str | None) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' or None -> () (no augmentation)."""
    names = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    unknown = [p for p in names if p not in AUGMENTATIONS]
    if unknown:
        raise DCGANError(f"unknown augmentation {', '.join(unknown)}: use a comma-separated list of "
                         f"{', '.join(AUGMENTATIONS)}")
    return names


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


def setting(default, help: str, resumable: bool = False, shown: str | None = None):
    """A TrainConfig field, written once: its default, the help text of its `dcgan train` flag (with
    the unit), whether a resumed run may change it, and how --help shows the default when the value
    alone would not say it (`shown`)."""
    return field(default=default, metadata={"help": help, "resumable": resumable, "shown": shown})


@dataclass
class TrainConfig:
    """Every setting of a training run; the run directory's config.json is this, resolved. Each field
    is also a `dcgan train` flag (--name-with-dashes). A resumed run may change only what does not
    change what is learned: how long it runs, what it writes, where it runs, the health settings,
    and the learning rate."""

    # data
    data: str = setting("digits", "folder of images, or " + " | ".join(NAMED))
    data_dir: str | None = setting(None, "where a named dataset's files are (may move on resume)",
                                   resumable=True)
    exclude: str | None = setting(None, "text file of image paths (or dataset indices) to leave out, "
                                  "one per line")
    conditional: bool = setting(False, "class-conditional G and D: the data's labels (a labelled dataset, "
                                "or a folder with one subfolder per class) go into both networks")
    # model (see ModelConfig; image_size and channels default to the data's own)
    preset: str = setting("pytorch", " | ".join(PRESETS) + ": architecture and training defaults")
    model: ModelConfig | None = None
    # optimisation (paper §4)
    batch_size: int = setting(128, "images per step and rank")
    steps: int | None = setting(None, "total G updates (steps)", resumable=True,
                                shown="--epochs' worth")
    epochs: int | None = setting(None, "passes over the data, when --steps is not given", resumable=True,
                                 shown="25")
    lr: float = setting(2e-4, "Adam learning rate for both networks", resumable=True)
    beta1: float = setting(0.5, "Adam beta1 (0.9 oscillates, paper §4)")
    beta2: float = setting(0.999, "Adam beta2")
    weight_decay: float = setting(0.0, "L2 weight decay (the paper's code: 1e-5)", shown="the preset's")
    label_smoothing: float = setting(0.0, "one-sided: the real target is 1 - this, e.g. 0.1")
    d_steps: int = setting(1, "D updates per G update")
    augment: str | None = setting(None, "differentiable augmentation for small datasets (DiffAugment): a "
                                  "comma-separated list of translation, cutout, color")
    ema_decay: float | None = setting(None, "keep an exponential moving average of G's weights with this "
                                      "decay per step, e.g. 0.999, warmed up as min(decay, (1 + step) / "
                                      "(10 + step)); samples, metrics and export then use it")
    ema_kimg: float | None = setting(None, "the same average given as a half-life in thousands of G's "
                                     "images: decay = 0.5 ** (batch_size x ranks / (1000 x this))")
    seed: int = setting(0, "seed of every random stream of the run, 0..2^63-1")
    device: str = setting("auto", "cpu | cuda | cuda:N | mps | auto", resumable=True)
    workers: int | None = setting(None, "processes decoding images: into the dataset cache, or while "
                                  "training with --cache false", resumable=True, shown="all cores")
    cache: bool = setting(True, "decode the data once into $DCGAN_CACHE_DIR and train from there (memory-"
                          "mapped when larger than DCGAN_MAX_MEMORY_GB); false: decode while training "
                          "(for LSUN without disk to spare)", resumable=True)
    # speed (GPU levers; none changes what is learned beyond floating-point rounding)
    precision: str = setting("fp32", "fp32 | bf16 | fp16: mixed precision, for GPUs (fp16 with one loss "
                             "scaler per network)", resumable=True)
    channels_last: bool = setting(True, "NHWC memory layout: faster convolutions on CPU (oneDNN) and GPU",
                                  resumable=True)
    compile: bool = setting(False, "torch.compile both networks", resumable=True)
    sync_bn: bool = setting(False, "under torchrun: BatchNorm statistics over the global batch, not per rank")
    # sample quality during training (dcgan.metrics)
    eval_every: int = setting(0, "steps between FID/KID/precision/recall evaluations (0: never)",
                              resumable=True)
    eval_extractor: str = setting("inception", "the network whose features FID/KID compare: inception, or "
                                  "classifier:PATH from dcgan train-classifier", resumable=True)
    eval_n: int = setting(2000, "generated and real images per evaluation", resumable=True)
    inception_weights: str | None = setting(None, "local pt_inception-2015-12-05 weights file (or "
                                            "$DCGAN_INCEPTION_WEIGHTS)", resumable=True)
    best_metric: str = setting("fid", "best.pt is the checkpoint of this metric's best value (lowest fid or "
                               "kid, highest precision or recall; any metric dcgan evaluate reports)",
                               resumable=True)
    # health
    on_divergence: str = setting("stop", "stop | rollback: on a non-finite loss or weight, reload the last "
                                 "checkpoint with lr x --rollback-lr-factor", resumable=True)
    rollback_lr_factor: float = setting(0.5, "each rollback multiplies both learning rates by this",
                                        resumable=True)
    max_rollbacks: int = setting(3, "rollbacks before training stops", resumable=True)
    vanishing_loss: float = setting(0.01, "warn when loss_D stays below this (G's gradient vanishes) ...",
                                    resumable=True)
    vanishing_patience: int = setting(200, "... for this many steps", resumable=True)
    collapse_threshold: float = setting(0.1, "warn when sample diversity / real diversity falls below this",
                                        resumable=True)
    collapse_after: int = setting(200, "... from this step on (an untrained G draws near-constant images)",
                                  resumable=True)
    # outputs
    out: str | None = setting(None, "run directory", resumable=True, shown="runs/<data>-<preset>")
    log_every: int = setting(10, "steps between metrics.jsonl / TensorBoard rows", resumable=True)
    sample_every: int = setting(100, "steps between fixed-noise sample grids", resumable=True)
    checkpoint_every: int = setting(100, "steps between writes of checkpoint.pt (the latest)",
                                    resumable=True)
    snapshot_every: int = setting(1000, "steps between kept snapshots in snapshots/", resumable=True)
    n_samples: int = setting(64, "images in each sample grid", resumable=True)
    tensorboard: bool = setting(True, "write TensorBoard logs", resumable=True)

    def to_dict(self) -> dict:
        return asdict(self)


# Fields a resumed run may change: how long it runs and what it writes, never what it learns.
RESUMABLE_CHANGES = {f.name for f in fields(TrainConfig) if f.metadata.get("resumable")}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
RENAMED = {"eval_features": "eval_extractor"}  # older name -> name: stored runs and config files still read
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"model"}


def renamed(settings: dict) -> dict:
    """`settings` with every older setting name replaced by its current one."""
    return {RENAMED.get(k, k): v for k, v in settings.items()}


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
    flat.pop("data_fingerprint", None)  # a run's config.json records its data there: not a setting
    nested = flat.pop("model", None) or {}
    if not isinstance(nested, dict):
        raise DCGANError(f"config file {path}: `model` must be a mapping of model settings")
    if not all(isinstance(k, str) for k in nested):
        raise DCGANError(f"config file {path}: every model setting name must be text")
    flat.update(nested)
    return validate_overrides(flat, source=str(path))


def validate_overrides(overrides: dict, source: str) -> dict:
    """Reject unknown keys and wrong types, naming the key and the source."""
    overrides = renamed(overrides)
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
    if config.workers is not None:
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
    if not (config.eval_extractor == "inception" or config.eval_extractor.startswith("classifier:")
            and len(config.eval_extractor) > len("classifier:")):
        raise DCGANError(f"eval_extractor must be inception or classifier:PATH, got "
                         f"{config.eval_extractor!r}")
    if not (0 <= config.beta1 < 1 and 0 <= config.beta2 < 1):
        raise DCGANError(f"beta1 and beta2 must lie in [0, 1), got {config.beta1}, {config.beta2}")
    if config.precision not in ("fp32", "bf16", "fp16"):
        raise DCGANError(f"precision must be fp32, bf16 or fp16, got {config.precision!r}")
    if config.on_divergence not in ("stop", "rollback"):
        raise DCGANError(f"on_divergence must be stop or rollback, got {config.on_divergence!r}")
    if not 0 < config.rollback_lr_factor < 1:
        raise DCGANError(f"rollback_lr_factor must lie in (0, 1), got {config.rollback_lr_factor}")
    parse_policy(config.augment)
    if config.ema_decay is not None and config.ema_kimg is not None:
        raise DCGANError(f"give either ema_decay or ema_kimg, not both (got {config.ema_decay} and "
                         f"{config.ema_kimg}): each sets the average's decay, one per step, one as a "
                         "half-life")
    if config.ema_decay is not None and not 0 < config.ema_decay < 1:
        raise DCGANError(f"ema_decay must lie in (0, 1), e.g. 0.999, got {config.ema_decay}")
    if config.ema_kimg is not None:
        check_number(config.ema_kimg, "ema_kimg", positive=True)
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
    d = renamed(d)
    model = ModelConfig.from_dict(d.pop("model"))
    return TrainConfig(model=model, **{k: v for k, v in d.items() if k in TRAIN_FIELDS})


def differences(old: TrainConfig, new: TrainConfig, ignore: set[str]) -> list[str]:
    """'name: old -> new' for every setting that differs, model fields included."""
    a = {**{k: v for k, v in old.to_dict().items() if k != "model"}, **old.model.to_dict()}
    b = {**{k: v for k, v in new.to_dict().items() if k != "model"}, **new.model.to_dict()}
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b.get(k)]


def default_run_dir(config: TrainConfig) -> Path:
    name = Path(config.data).name if Path(config.data).exists() else config.data
    return Path("runs") / f"{name}-{config.preset}"


def configure_new(overrides: dict) -> TrainConfig:
    """The settings of a new run: preset, then the data's own shape, then `overrides`."""
    data = overrides.get("data", TrainConfig.data)
    config = resolve(overrides, data_shape=natural_shape(data))
    config.out = str(config.out or default_run_dir(config))
    if config.exclude is not None:
        check_regular_file(config.exclude, "exclude list")
    return config


def configure_resumed(stored: dict, overrides: dict, resume: str | Path) -> TrainConfig:
    """The settings of a resumed run: those `stored` in its checkpoint, with `overrides` of what may
    change on resume (RESUMABLE_CHANGES: run length, outputs, device, health, learning rate);
    anything else is an error naming each difference. An `out` other than the resumed run's own
    directory makes a branch: a new run there that starts from the resumed checkpoint."""
    try:
        old = from_dict(stored)
    except (TypeError, DCGANError) as e:
        raise DCGANError(f"{resume}: the stored training config is invalid ({e})") from None
    merged = {**{k: v for k, v in old.to_dict().items() if k != "model"},
              **old.model.to_dict(), **overrides, "out": str(overrides.get("out") or run_of(resume))}
    if "steps" in overrides or "epochs" in overrides:  # a new length replaces the old one
        merged["steps"], merged["epochs"] = overrides.get("steps"), overrides.get("epochs")
    try:
        config = resolve(merged)
    except DCGANError as e:
        raise DCGANError(f"cannot resume {resume}: {e}") from None
    changed = differences(old, config, ignore=RESUMABLE_CHANGES)
    if changed:
        raise DCGANError(f"cannot resume {resume} with different settings: {'; '.join(changed)}. "
                         "Start a new run (without --resume) instead.")
    return config


def run_of(resume: str | Path) -> Path:
    """The run directory of a --resume argument: a run directory, its checkpoint.pt (or best.pt),
    or one of its snapshots/step_N.pt."""
    path = Path(resume)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "snapshots" else path.parent
