"""dcgan: Deep Convolutional GANs (Radford, Metz, Chintala 2015) for any image size.

    import dcgan
    run = dcgan.train({"data": "digits", "steps": 300})
    g = dcgan.load_generator(run)
    images = g.sample(64, seed=0)  # (64, 1, 32, 32) in [-1, 1]
    dcgan.sample_sheet(run, out="sheet.png", n=64, numbered=True)

Everything the `dcgan` command does is a function here, called the way the command calls it:
`(source, *, out, data=None, data_dir=None, seed=0, ...)`. The names load on first use, so that
`import dcgan` (and `dcgan --help`) does not import torch.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "DCGANError": "errors",
    "PRESETS": "config", "TrainConfig": "config", "ModelConfig": "config",
    "Generator": "models", "Discriminator": "models", "build": "models",
    "open_dataset": "data", "cache_dir": "data", "cache_entries": "data", "clear_cache": "data",
    "configure": "train", "plan": "train", "train": "train",
    "load_networks": "checkpoint", "load_generator": "checkpoint", "load_discriminator": "checkpoint",
    "export": "checkpoint",
    "sample_sheet": "latent", "walk_report": "latent", "arithmetic_report": "latent",
    "direction_report": "latent",
    "directions_report": "directions", "project_report": "projection",
    "neighbours_report": "neighbours", "forget": "forget", "dedup": "dedup",
    "evaluate": "metrics", "describe_quality": "metrics", "train_classifier": "metrics",
    "write_features": "representation",
    "probe": "probe", "describe_probe": "probe", "describe_paired": "probe",
    "guided_backprop_report": "saliency", "feature_map_report": "saliency",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'dcgan' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dcgan.{_API[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """Importing the submodule dcgan.train (or dedup, probe, forget) must not hide the function of
    the same name: the package attribute stays the function, as `from dcgan import train` expects."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _API.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
