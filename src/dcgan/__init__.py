"""dcgan: Deep Convolutional GANs (Radford, Metz, Chintala 2015) for any image size.

    import dcgan
    run = dcgan.train({"data": "digits", "steps": 300})
    g = dcgan.load_generator(run)
    images = g.sample(64, seed=0)  # (64, 1, 32, 32) in [-1, 1]
"""

from dcgan.checkpoint import export, load_generator
from dcgan.config import PRESETS, TrainConfig, configure
from dcgan.data import open_dataset
from dcgan.errors import DCGANError
from dcgan.models import Discriminator, Generator, ModelConfig, build
from dcgan.train import train

__version__ = "0.1.0"
__all__ = [
    "PRESETS", "DCGANError", "Discriminator", "Generator", "ModelConfig", "TrainConfig", "build",
    "configure", "export", "load_generator", "open_dataset", "train",
]
