"""dcgan: Deep Convolutional GANs (Radford, Metz, Chintala 2015) for any image size.

    import dcgan
    run = dcgan.train({"data": "digits", "steps": 300})
    g = dcgan.load_generator(run)
    images = g.sample(64, seed=0)  # (64, 1, 32, 32) in [-1, 1]
    dcgan.sample_sheet(run, out="sheet.png", n=64, numbered=True)

Everything the `dcgan` command does is a function here, called the way the command calls it:
`(source, *, out, data=None, data_dir=None, seed=0, ...)`. A module makes a name public by listing
it in its `__all__`; the package finds it there on first use, so `import dcgan` (and `dcgan --help`)
does not import torch.
"""

import importlib
import sys
import types
from pathlib import Path

__version__ = "0.1.0"

# the modules whose __all__ names are the package's, searched in this order (lightest first)
MODULES = ("errors", "config", "models", "cache", "data", "checkpoint", "train", "latent", "directions",
           "projection", "neighbours", "forget", "dedup", "metrics", "representation", "probe", "saliency",
           "explore")


def _public(module: str) -> list[str]:
    return getattr(importlib.import_module(f"dcgan.{module}"), "__all__", [])


def __getattr__(name: str):
    if name == "__all__":
        value = sorted(n for m in MODULES for n in _public(m))
    elif (Path(__file__).parent / f"{name}.py").is_file():  # a submodule (`from dcgan import seeds`),
        module = importlib.import_module(f"dcgan.{name}")  # or the function named like it (dcgan.train)
        value = getattr(module, name) if name in module.__all__ else module
    else:
        module = next((m for m in MODULES if name in _public(m)), None)
        if module is None:
            raise AttributeError(f"module 'dcgan' has no attribute {name!r}")
        value = getattr(sys.modules[f"dcgan.{module}"], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})


class _Package(types.ModuleType):
    """Importing the submodule dcgan.train (or dedup, probe, forget) must not hide the public
    function of the same name: `dcgan.train` stays the function."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in getattr(value, "__all__", ()):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
