"""Property-based tests (Hypothesis): the settings parser and the file readers, fed random flags, bytes
and headers, either accept the input or raise DCGANError; never another exception, never a hang (each
example runs under a deadline)."""

import contextlib
import gzip
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dcgan import checkpoint, cli, datasets
from dcgan.cli import indices
from dcgan.config import read_config_file, resolve
from dcgan.data import _try_decode
from dcgan.errors import DCGANError
from dcgan.forget import read_boxes

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

TRAIN_FLAGS = """
--image-size --channels --nz --ngf --ndf --kernel-size --batch-size --steps --epochs --lr --beta1
--weight-decay --label-smoothing --d-steps --seed --device --log-every --sample-every
--checkpoint-every --snapshot-every --tensorboard --precision --channels-last --compile
--on-divergence --rollback-lr-factor --max-rollbacks --vanishing-loss --vanishing-patience
--collapse-threshold --collapse-after --eval-every --eval-features --eval-n --preset --data --ema-decay
--ema-kimg""".split()
VALUES = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e400", "true", "no", "cpu", "cuda:9", "paper",
                     "classifier:", "bf16", "rollback", "", " ", "\x00", "digits", "imagenet32"]),
    st.text(max_size=12))


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse: --help or a bad flag
            code = e.code
    return code, err.getvalue()


@FAST
@given(st.lists(st.tuples(st.sampled_from(TRAIN_FLAGS), VALUES), max_size=6))
def test_train_flags_resolve_or_give_one_error_line(pairs):
    argv = ["train", "--dry-run"] + [f"{flag}={value}" for flag, value in pairs]
    code, err = run_cli(argv)
    assert code in (0, 1), (argv, err)
    assert "this is a bug" not in err and "Traceback" not in err, (argv, err)
    if code == 1:
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, err


SETTING = st.sampled_from(["lr", "beta1", "batch_size", "image_size", "ngf", "nz", "seed", "device", "preset",
                           "steps", "epochs", "eval_n", "model", "weight_decay", "precision", "latent",
                           "channels", "alternate_strides", "tensorboard", "bogus", "data", "out"])
YAML_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


@FAST
@given(st.dictionaries(SETTING, YAML_VALUE, max_size=5))
def test_settings_mappings_resolve_or_raise_dcganerror(settings_):
    with contextlib.suppress(DCGANError):
        resolve(settings_)


@FAST
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".yaml", ".json", ".yml", ""]))
def test_config_files_of_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(data)
    with contextlib.suppress(DCGANError):
        assert isinstance(read_config_file(path), dict)


@FAST
@given(st.dictionaries(SETTING, YAML_VALUE, max_size=5))
def test_config_files_of_random_settings(tmp_path, mapping):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(mapping, default=str))
    with contextlib.suppress(DCGANError):
        resolve(read_config_file(path))


# ---- dataset readers ---------------------------------------------------------------------

@st.composite
def idx_files(draw) -> bytes:
    """IDX files with random headers: magic, dtype, dimension count, dimensions, body length."""
    dtype = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    dims = draw(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), max_size=5))
    ndim = draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))
    body = draw(st.one_of(st.binary(max_size=2000), st.integers(0, 5000).map(bytes)))
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"PK"]))
    raw = magic + bytes([dtype, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + body
    return gzip.compress(raw) if draw(st.booleans()) else raw


@FAST
@given(idx_files())
def test_idx_reader_on_random_headers(tmp_path, raw):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(raw)
    with contextlib.suppress(DCGANError):
        assert isinstance(datasets.read_idx(path), np.ndarray)


@FAST
@given(st.binary(max_size=500))
def test_idx_reader_on_random_bytes(tmp_path, raw):
    path = tmp_path / "x.idx"
    path.write_bytes(raw)
    with contextlib.suppress(DCGANError):
        datasets.read_idx(path)


CIFAR_VALUE = st.one_of(
    st.none(), st.integers(), st.text(max_size=4), st.lists(st.one_of(st.integers(-20, 20), st.floats(),
                                                                       st.text(max_size=2)), max_size=4),
    st.builds(lambda shape, kind: np.zeros(shape, dtype=kind),
              st.lists(st.integers(0, 4), max_size=3).map(tuple) | st.just((2, 3072)),
              st.sampled_from([np.uint8, np.float32, np.int64, np.bool_])))


@FAST
@given(st.one_of(st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels", b"x"]), CIFAR_VALUE,
                                 max_size=3), CIFAR_VALUE))
def test_cifar_reader_on_random_batches(tmp_path, batch):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir(exist_ok=True)
    (root / "test_batch").write_bytes(pickle.dumps(batch))
    with contextlib.suppress(DCGANError):
        images, labels = datasets.read_cifar10(str(tmp_path), "test")
        assert images.dtype == np.uint8 and labels.min() >= 0 and labels.max() <= 9


@FAST
@given(st.binary(max_size=400))
def test_cifar_reader_on_random_bytes(tmp_path, raw):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir(exist_ok=True)
    (root / "test_batch").write_bytes(raw)
    with contextlib.suppress(DCGANError):
        datasets.read_cifar10(str(tmp_path), "test")


@FAST
@given(st.binary(max_size=600), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM",
                                                 b"RIFF\x00\x00\x00\x00WEBP", b"%!PS-Adobe-3.0 EPSF-3.0\n"]))
def test_image_decoder_on_random_bytes(tmp_path, body, magic):
    path = tmp_path / "x.png"
    path.write_bytes(magic + body)
    x = _try_decode((Path(path), 16, 3, None))  # unreadable images are skipped, never raised
    assert x is None or (x.dtype == torch.uint8 and x.shape == (3, 16, 16))


@FAST
@given(st.binary(max_size=400))
def test_checkpoint_loader_on_random_bytes(tmp_path, raw):
    path = tmp_path / "c.pt"
    path.write_bytes(raw)
    with pytest.raises(DCGANError):
        checkpoint.load(path)


@FAST
@given(st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")), st.recursive(
    st.one_of(st.integers(-5, 40), st.floats(), st.text(max_size=3), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["boxes", "seed", "index", "x"]), inner, max_size=3)),
    max_leaves=12).map(json.dumps)))
def test_boxes_reader_on_random_json(tmp_path, text):
    path = tmp_path / "boxes.json"
    path.write_text(text, encoding="latin-1")
    with contextlib.suppress(DCGANError):
        assert all(0 <= x0 < x1 <= 16 and 0 <= y0 < y1 <= 16 for b in read_boxes(path, 16)
                   for x0, y0, x1, y1 in b.boxes)


@FAST
@given(st.text(max_size=40))
def test_sample_numbers_parse_or_raise(text):
    assume("\x00" not in text)
    with contextlib.suppress(DCGANError):
        values = indices(text, "--a")
        assert values and all(isinstance(v, int) and 0 <= v < 10**10 for v in values)
