"""Sample quality: FID, KID, improved precision/recall and Inception Score, from a fixed extractor.

FID, KID and IS come from torchmetrics, fed with features computed once here (so that one pass of the
extractor serves every metric, and batch size cannot change a result). The extractor is either
Inception-v3 (the standard pt_inception-2015-12-05 weights, read from a local file: nothing is
downloaded) or the penultimate layer of a small classifier trained by `dcgan train-classifier`,
which makes quality measurable on small grey data on a CPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcgan import seeds
from dcgan.checkpoint import load_generator, run_data
from dcgan.config import MAX_SEED, MIN_EVAL_N, check_count, check_seed
from dcgan.data import labelled_splits, open_dataset, to_float, to_uint8
from dcgan.datasets import has_test_split, natural_shape
from dcgan.errors import DCGANError, check_regular_file
from dcgan.models import eval_mode
from dcgan.outputs import check_output_file, write_bytes
from dcgan.progress import Progress

__all__ = ["describe_quality", "evaluate", "train_classifier"]  # public: dcgan.NAME

INCEPTION_ENV = "DCGAN_INCEPTION_WEIGHTS"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


class Classifier(nn.Module):
    """A small CNN for 32x32 images; its 256-d penultimate layer is the domain feature extractor."""

    num_features = 256

    def __init__(self, channels: int, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for cout in (32, 64, 128):  # state size. cout x 16, 8, 4
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(True))
        self.head = nn.Linear(256, classes)
        self.channels = channels
        self.trained_on = "unknown"  # the dataset it was trained on, from its file's metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(data: str, *, out: str | Path, data_dir: str | None = None, epochs: int = 3,
                     batch_size: int = 128, seed: int = 0) -> dict:
    """Train on the train split, report accuracy on the test split, save weights + metadata."""
    from safetensors.torch import save as safetensors_bytes

    out = check_output_file(out, inputs=[data, data_dir], suffixes=(".safetensors",))
    check_count(epochs, "epochs", 1000)
    check_count(batch_size, "batch_size", 2**16)
    check_seed(seed, "seed", MAX_SEED)
    channels = natural_shape(data)[0]
    train, test = labelled_splits(data, 32, channels, data_dir)
    x, y, test_x, test_y = train.images, train.labels, test.images, test.labels
    with seeds.global_seed(seed):
        model = Classifier(channels, int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    with Progress(epochs * len(x), f"classifier on {data}, {epochs} epoch(s)") as bar:
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = F.cross_entropy(model(to_float(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(len(idx))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_float(c)).argmax(1) for c in test_x.split(1024)])
    accuracy = float((pred == test_y).float().mean())
    meta = {"format": "dcgan-classifier", "channels": str(channels), "classes": str(model.head.out_features),
            "data": data, "test_accuracy": f"{accuracy:.4f}"}
    write_bytes(out, safetensors_bytes(model.state_dict(), metadata=meta))
    return {"test_accuracy": accuracy, "train_images": len(x), "test_images": len(test_x)}


def load_classifier(path: str | Path) -> Classifier:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = check_regular_file(path, "classifier")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        weights = load_file(str(path))
    except Exception as e:
        raise DCGANError(f"cannot read classifier {path} ({e}); train one with dcgan train-classifier") \
            from None
    if meta.get("format") != "dcgan-classifier":
        raise DCGANError(f"{path} is not a classifier written by dcgan train-classifier")
    channels, classes = meta.get("channels", ""), meta.get("classes", "")
    if channels not in ("1", "3") or not classes.isdigit() or not 2 <= int(classes) <= 10_000:
        raise DCGANError(f"{path}: classifier metadata out of range (channels {channels[:20]!r} must be "
                         f"1 or 3, classes {classes[:20]!r} from 2 to 10000)")
    with seeds.global_seed(0):  # its random init is overwritten: keep the caller's RNG as it was
        model = Classifier(int(channels), int(classes))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), "")
        raise DCGANError(f"{path}: the classifier weights do not match its metadata "
                         f"({first[:160]})") from None
    for k, v in model.state_dict().items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DCGANError(f"{path}: classifier weight {k} holds NaN or infinite values")
    model.trained_on = meta.get("data", "unknown")[:200]
    return model.eval()


def inception_weights(path: str | None) -> dict[str, torch.Tensor]:
    """The Inception-v3 state dict of a local weights file (--inception-weights, or
    $DCGAN_INCEPTION_WEIGHTS), read once and weights-only: no library ever opens the path again, so a
    file swapped after this read is never unpickled."""
    path = path or os.environ.get(INCEPTION_ENV)
    if not path or not Path(path).exists():
        raise DCGANError(
            f"Inception weights not found{f' at {path}' if path else ''}: get {INCEPTION_FILE} (the file "
            "pytorch-fid and torch-fidelity use) on a machine with internet access, and pass it with "
            f"--inception-weights or set {INCEPTION_ENV}. Nothing is downloaded at run time.")
    check_regular_file(path, "Inception weights")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DCGANError(f"cannot read Inception weights {path}: {e.strerror or e}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise DCGANError(f"{path} is not a plain Inception weights file ({type(e).__name__}): it must hold "
                         f"only tensors; get {INCEPTION_FILE}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise DCGANError(f"{path} is not an Inception weights file: expected a state dict of tensors; "
                         f"get {INCEPTION_FILE}")
    return state


def inception_network(path: str | None) -> nn.Module:
    """torch-fidelity's Inception-v3 with the weights of `path`. torch-fidelity loads its weights with
    torch.load(weights_only=False): it is handed an in-memory copy of the state dict read above, never
    the user's path."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = inception_weights(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # tensors only: what torch-fidelity unpickles is ours
    buffer.seek(0)
    try:
        with seeds.global_seed(0):  # its random init is overwritten: keep the caller's RNG as it was
            return FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=buffer)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise DCGANError(f"{path or os.environ.get(INCEPTION_ENV)} does not hold Inception-v3 weights "
                         f"({first[:200]}); get {INCEPTION_FILE}") from None


class Extractor(nn.Module):
    """uint8 images (N, C, H, W) -> (N, d) features of a frozen extractor."""

    def __init__(self, spec: str, inception: str | None = None):
        super().__init__()
        self.spec = spec
        if spec == "inception":
            self.net = inception_network(inception)
            self.weights = inception or os.environ.get(INCEPTION_ENV)  # the file inception_network read
            self.channels, self.num_features = 3, 2048
        elif spec.startswith("classifier:"):
            self.weights = spec.split(":", 1)[1]
            self.net = load_classifier(self.weights)
            self.channels, self.num_features = self.net.channels, Classifier.num_features
        else:
            raise DCGANError(f"unknown features {spec!r}: use inception or classifier:PATH")
        self.requires_grad_(False)

    def protocol(self, image_size: int, channels: int) -> dict:
        """How images reach the features: the extractor, a SHA-256 of its weights file, the resize path."""
        if self.spec == "inception":
            name = "Inception-v3 (torch-fidelity inception-v3-compat), 2048-d pool features"
            resize = (f"uint8 {channels}x{image_size}x{image_size}"
                      f"{' -> 3 channels (grey repeated)' if channels == 1 else ''} -> bilinear to 299x299 "
                      "inside the extractor (torch-fidelity)")
        else:
            name = f"classifier {self.weights}, {self.num_features}-d penultimate layer"
            to_channels = f" -> {self.channels} channels" if channels != self.channels else ""
            resize = (f"uint8 {channels}x{image_size}x{image_size}{to_channels} -> [-1, 1]"
                      + (" -> bilinear (antialiased) to 32x32" if image_size != 32 else ", no resize"))
        digest = hashlib.sha256()
        with open(self.weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {"feature_extractor": name, "weights_sha256": digest.hexdigest(), "resize": resize}

    def check_data(self, data: str, channels: int, labels: torch.Tensor | None = None) -> None:
        """A classifier measures only the images it was trained for: other channels, or another
        number of classes than labelled data has, are refused; another dataset is said in one line."""
        if self.spec == "inception":
            return
        trained_on = self.net.trained_on
        if channels != self.channels:
            kinds = {1: "grey", 3: "RGB"}
            raise DCGANError(f"classifier {self.weights} was trained on {kinds[self.channels]} images "
                             f"({trained_on}); these are {kinds[channels]}: train one on this data with "
                             f"dcgan train-classifier --data {data}, or use --extractor inception")
        if labels is not None and len(labels) and int(labels.max()) + 1 != self.net.head.out_features:
            raise DCGANError(f"classifier {self.weights} tells {self.net.head.out_features} classes apart "
                             f"({trained_on}); {data} has {int(labels.max()) + 1}: train one on this data "
                             f"with dcgan train-classifier --data {data}")
        if trained_on not in ("unknown", data):
            print(f"note: classifier {self.weights} was trained on {trained_on}, the real data is {data}: "
                  "its features describe another domain", file=sys.stderr)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.expand(-1, 3, -1, -1) if self.channels == 3 else x.float().mean(1, keepdim=True).round()
        return x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._input(x)
        if self.spec == "inception":
            feats, logits = self.net(x.to(torch.uint8))  # both in one pass; resized to 299 inside
            return feats.reshape(len(x), -1).double(), logits.reshape(len(x), -1).double()
        x = to_float(x)
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        return self.net.features(x).double(), None


def extract(images: torch.Tensor, extractor: Extractor, batch_size: int = 200,
            progress: str | None = None) -> tuple[torch.Tensor, ...]:
    """(features (N, d), logits or None) of uint8 images, in batches."""
    parts = []
    with Progress(len(images), progress) as bar:
        for chunk in images.split(batch_size):
            parts.append(extractor.features_and_logits(chunk))
            bar.update(len(chunk))
    feats = torch.cat([p[0] for p in parts])
    logits = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
    return feats, logits


class _Given(nn.Module):
    """The 'extractor' torchmetrics sees: our features pass through unchanged."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (N, d), by torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Given(real.shape[1]))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return float(fid.compute())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100,
                    subset_size: int = 1000) -> tuple[float, float]:
    """KID (mean, std over subsets) between two feature sets, by torchmetrics. The std is NaN
    (undefined) when a subset is each whole set: every subset then gives the same number."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": we hand it features
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with seeds.global_seed(0):  # the subsets are drawn at random: fixed, for reproducible numbers
        mean, std = kid.compute()
    return float(mean), float("nan") if size >= max(len(real), len(fake)) else float(std)


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    return torch.cat([torch.cdist(c, x).kthvalue(k + 1, dim=1).values for c in x.split(1000)])


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    return torch.cat([(torch.cdist(c, centres) <= radii).any(1) for c in points.split(1000)])


def precision(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> float:
    """Improved precision (Kynkaanniemi et al. 2019): the share of fakes on the real manifold, the union
    of balls reaching every real point's k-th nearest neighbour."""
    real, fake = real.float(), fake.float()
    return float(_covered(fake, real, _kth_radius(real, k)).float().mean())


def recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> float:
    """Improved recall: the share of reals on the fake manifold (low recall = mode collapse)."""
    return precision(fake, real, k)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019)."""
    return precision(real, fake, k), recall(real, fake, k)


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E KL(p(y|x) || p(y))), mean and std over splits, by torchmetrics."""
    from torchmetrics.image.inception import InceptionScore

    score = InceptionScore(feature=_Given(logits.shape[1]), splits=splits)
    score.update(logits)
    with seeds.global_seed(0):
        mean, std = score.compute()
    return float(mean), float(std)


@dataclass(frozen=True)
class Metric:
    """One score of generated against real images: how it is computed, which way is better, how it prints.
    `compute` takes (real features, fake features), or the fake logits alone with on_logits; a (mean, std)
    result is recorded as NAME and NAME_std."""

    label: str  # as printed: "FID 12.345"
    compute: Callable[..., float | tuple[float, float]]
    lower_is_better: bool
    digits: int  # decimals printed
    on_logits: bool = False  # needs the extractor's class logits (Inception only)


# Every metric, once: `dcgan evaluate`, the training-time Evaluator, the console line, TensorBoard and
# --best-metric all read this table.
METRICS: dict[str, Metric] = {
    "fid": Metric("FID", frechet_distance, lower_is_better=True, digits=3),
    "kid": Metric("KID", kernel_distance, lower_is_better=True, digits=5),  # std over subsets: kid_std
    "precision": Metric("precision", precision, lower_is_better=False, digits=3),
    "recall": Metric("recall", recall, lower_is_better=False, digits=3),
    "inception_score": Metric("IS", inception_score, lower_is_better=False, digits=2, on_logits=True),
}


def scores(real: torch.Tensor, fake: torch.Tensor, fake_logits: torch.Tensor | None = None) -> dict:
    """Every metric of the table between two feature sets (those over logits when logits are given)."""
    out = {}
    for name, m in METRICS.items():
        if m.on_logits and fake_logits is None:
            continue
        value = m.compute(fake_logits) if m.on_logits else m.compute(real, fake)
        if isinstance(value, tuple):
            out[name], out[f"{name}_std"] = value
        else:
            out[name] = value
    return out


def compare(real: torch.Tensor, fake: torch.Tensor, fake_logits: torch.Tensor | None = None) -> dict:
    """Every metric between two feature sets, and the set sizes."""
    return {**scores(real, fake, fake_logits), "n_real": len(real), "n_fake": len(fake)}


def describe_quality(r: dict, n: int | None = None) -> str:
    """Every metric in `r` in one line (with its standard deviation where it has one); at n < 10,000 a
    reminder that FID is biased there."""
    parts = []
    for name, m in METRICS.items():
        if name in r:
            std = r.get(f"{name}_std")
            std = "" if std is None else " +- n/a" if math.isnan(std) else f" +- {std:.{m.digits}f}"
            parts.append(f"{m.label} {r[name]:.{m.digits}f}{std}")
    line = "  ".join(parts)
    if n is not None:
        line += f"  (n={n}{'; FID is biased upward below 10,000' if n < 10000 else ''})"
    return line


def check_best_metric(name: str, features: str) -> Metric:
    """The metric --best-metric names, measurable with these --eval-features."""
    if name not in METRICS:
        raise DCGANError(f"best_metric {name!r} is not a metric: choose one of {', '.join(METRICS)}")
    if METRICS[name].on_logits and features != "inception":
        raise DCGANError(f"best_metric {name} needs --eval-features inception (a classifier gives no "
                         f"Inception logits); choose one of "
                         f"{', '.join(k for k, m in METRICS.items() if not m.on_logits)}")
    return METRICS[name]


def better(metric: str, value: float, than: float | None) -> bool:
    """Whether `value` of `metric` improves on `than` (None: nothing measured yet)."""
    if than is None:
        return True
    return value < than if METRICS[metric].lower_is_better else value > than


def evaluate(source: str | Path, *, data: str | None = None, n: int = 10000, extractor: str = "inception",
             data_dir: str | None = None, split: str = "test", inception_weights: str | None = None,
             seed: int = 0, out: str | Path | None = None, real_vs_real: bool = False,
             generator: str | None = None) -> dict:
    """Generated vs real images of a trained run, every metric; optionally written as JSON.
    `data`: the run's training data unless given; `extractor`: inception, or classifier:PATH (a
    `dcgan train-classifier` file). A data source without a test split is compared as "train".
    real_vs_real: two disjoint draws of n real images instead, at the run's size: the floor no
    generator can beat at this n."""
    check_count(n, "n", 10**6, MIN_EVAL_N)
    check_seed(seed, "seed", MAX_SEED)
    if split not in ("train", "test"):
        raise DCGANError(f"split must be train or test, got {split!r}")
    data, data_dir, _ = run_data(source, data, data_dir, what="the real data")
    notes = []
    if split == "test" and not has_test_split(data):
        split = "train"
        notes.append(f"{data} has no test split: the real images are its training images (split train)")
    if out:
        classifier = extractor.split(":", 1)[1] if extractor.startswith("classifier:") else None
        out = check_output_file(out, inputs=[source, data, data_dir, classifier, inception_weights],
                                suffixes=(".json",))
    spec, extractor = extractor, Extractor(extractor, inception_weights)
    g = load_generator(source, generator=generator)
    c = g.config
    real_set = open_dataset(data, c.image_size, c.channels, data_dir, split=split)
    if real_set.images is None:
        raise DCGANError(f"{data} is too large to evaluate in memory: raise DCGAN_MAX_MEMORY_GB")
    extractor.check_data(data, c.channels, real_set.labels)
    order = torch.randperm(len(real_set), generator=torch.Generator().manual_seed(seed))
    if real_vs_real:
        half = min(n, len(order) // 2)
        if half < MIN_EVAL_N:
            raise DCGANError(f"--real-vs-real needs two draws of at least {MIN_EVAL_N} images; "
                             f"{data} {split} has {len(order)}")
        if half < n:
            notes.append(f"--n {n:,} is more than half the {len(order):,} real images of {data} {split}: "
                         f"two disjoint draws of {half:,}")
        real, fake = real_set.images[order[:half]], real_set.images[order[half:2 * half]]
        generated = f"real images: a second disjoint draw of {half} (real vs real, the floor)"
    else:
        real = real_set.images[order[:n]]
        if len(real) < n:
            notes.append(f"--n {n:,} is more than the {len(real):,} real images of {data} {split}: all of "
                         f"them are compared with {n:,} generated ones")
        z, y = g.latent(seed, range(n)), g.cycled_labels(range(n))  # a conditional G: class i % K
        with torch.no_grad():
            fake = torch.cat([to_uint8(g(chunk, labels))
                              for chunk, labels in zip(z.split(500), _chunks(y, z, 500), strict=True)])
        generated = f"G(latent(seed {seed}, 0..{len(fake) - 1}))" + (", class i % K" * (y is not None))
    real_f, _ = extract(real, extractor, progress=f"{spec} features of the real images")
    fake_f, fake_logits = extract(fake, extractor, progress=f"{spec} features of the compared images")
    result = {**compare(real_f, fake_f, fake_logits), "extractor": spec, "data": data, "split": split,
              "source": str(source)}
    result["protocol"] = {"n_real": len(real), "n_generated": len(fake),
                          "reference": f"{data} {split} split, {len(real)} images drawn with seed {seed}",
                          "generated": generated,
                          **extractor.protocol(c.image_size, c.channels)}
    if min(len(real), len(fake)) < 10000:
        notes.append(f"FID is biased upward at small n (here {min(len(real), len(fake))} < 10,000): compare "
                     "FIDs only at equal n; KID is unbiased")
    if notes:
        result["protocol"]["note"] = "; ".join(notes)
    if out:
        write_bytes(out, json.dumps(result, indent=2).encode())
    return result


def _chunks(labels: torch.Tensor | None, z: torch.Tensor, size: int) -> list:
    """`labels` split as z.split(size) splits z; Nones for an unconditional G."""
    return list(labels.split(size)) if labels is not None else [None] * len(z.split(size))


class Evaluator:
    """The metric during training: a fixed set of z against fixed real features."""

    def __init__(self, extractor: str, real: torch.Tensor, n: int, seed: int, inception: str | None = None,
                 data: str | None = None, labels: torch.Tensor | None = None):
        self.extractor = Extractor(extractor, inception)
        if data is not None:  # a classifier for other images is refused before training starts
            self.extractor.check_data(data, real.shape[1], labels)
        pick = torch.randperm(len(real), generator=seeds.generator(seed, "reference"))[:n]
        self.real, _ = extract(real[pick].cpu(), self.extractor)
        self.n, self.seed = n, seed

    def __call__(self, generator) -> dict:
        with eval_mode(generator), torch.no_grad():
            z = generator.latent(self.seed, range(self.n), stream="eval")
            y = generator.cycled_labels(range(self.n))  # a conditional G: every class equally often
            fake = torch.cat([to_uint8(generator(c, labels)).cpu()  # uint8 per chunk
                              for c, labels in zip(z.split(500), _chunks(y, z, 500), strict=True)])
        return scores(self.real, *extract(fake, self.extractor))
