"""Data sets: the embedded digits, MNIST IDX directories, CIFAR-10 batch directories, and the augmentation."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from circuits.errors import AxnetError
from dnn import data as D


def write_idx(path, array, compress=False):
    """Write a uint8 array as an IDX file (the format MNIST ships in)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def make_mnist_dir(tmp_path, n_train=6, n_test=4, compress=False, rng=None):
    rng = rng or np.random.default_rng(1)
    arrays = {}
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[split] = (images, labels)
    return arrays


def test_mnist5k_is_the_real_embedded_digits_split_4000_1000():
    d = D.load_mnist5k()
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    # every class present in both splits; the whole set has 500 of each digit
    counts = torch.bincount(torch.cat([d.train_y, d.test_y]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert set(d.test_y.tolist()) == set(range(10))
    # normalised with the MNIST mean/std: background pixels sit at -mean/std
    assert torch.isclose(d.train_x.min(), torch.tensor(-D.MNIST_MEAN / D.MNIST_STD), atol=1e-5)
    # the split is fixed: loading twice gives the same test set, disjoint from training
    again = D.load_mnist5k()
    assert torch.equal(again.test_x, d.test_x)
    train_rows = {bytes(r.numpy().tobytes()) for r in d.train_x[:200]}
    assert not any(bytes(r.numpy().tobytes()) in train_rows for r in d.test_x)


def test_mnist5k_csv_label_is_the_last_column():
    images, labels = D.read_mnist5k_csv(D.mnist5k_path())
    assert images.shape == (5000, 28, 28) and labels.min() == 0 and labels.max() == 9
    # a digit '1' has far fewer ink pixels than a digit '0' on average: the label column really is the label
    ink = (images > 0).reshape(5000, -1).sum(1)
    assert ink[labels == 1].mean() < 0.7 * ink[labels == 0].mean()


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_directory_loads_plain_and_gzipped(tmp_path, compress):
    arrays = make_mnist_dir(tmp_path, compress=compress)
    d = D.load_data(f"mnist:{tmp_path}")
    assert d.train_x.shape == (6, 1, 28, 28) and d.test_x.shape == (4, 1, 28, 28)
    assert d.train_y.tolist() == arrays["train"][1].tolist()
    expected = (arrays["t10k"][0][2].astype(np.float32) / 255 - D.MNIST_MEAN) / D.MNIST_STD
    assert np.allclose(d.test_x[2, 0].numpy(), expected, atol=1e-6)


def test_mnist_missing_file_names_the_file_and_directory(tmp_path):
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(AxnetError) as e:
        D.load_data(f"mnist:{tmp_path}")
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg and "\n" not in msg


def test_mnist_corrupt_idx_is_a_one_line_error(tmp_path):
    make_mnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])  # truncated data
    with pytest.raises(AxnetError, match="train-images-idx3-ubyte.*IDX header says"):
        D.load_data(f"mnist:{tmp_path}")
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)  # float IDX, not unsigned bytes
    with pytest.raises(AxnetError, match="not an IDX file"):
        D.load_data(f"mnist:{tmp_path}")


def write_cifar_dir(tmp_path, per_batch=3, rng=None):
    rng = rng or np.random.default_rng(2)
    for name in D.CIFAR_TRAIN_FILES + [D.CIFAR_TEST_FILE]:
        batch = {b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=per_batch).tolist(), b"batch_label": b"x"}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_batches_load_in_channel_first_order(tmp_path):
    write_cifar_dir(tmp_path)
    d = D.load_data(f"cifar10:{tmp_path}")
    assert d.train_x.shape == (15, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    with open(tmp_path / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    red = raw[b"data"][1, :1024].reshape(32, 32).astype(np.float32) / 255
    assert np.allclose(d.test_x[1, 0].numpy(), (red - D.CIFAR_MEAN[0]) / D.CIFAR_STD[0], atol=1e-5)
    assert d.test_y.tolist() == raw[b"labels"]


def test_cifar10_missing_and_corrupt_batches(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(AxnetError, match="data_batch_3 not found"):
        D.load_data(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_3").write_bytes(b"garbage, not a pickle")
    with pytest.raises(AxnetError, match="data_batch_3: not a CIFAR-10 python batch"):
        D.load_data(f"cifar10:{tmp_path}")


@pytest.mark.parametrize("spec", ["", "mnist", "mnist:", "imagenet:/x", "cifar10"])
def test_bad_data_spec_names_the_option(spec):
    with pytest.raises(AxnetError, match="--data"):
        D.parse_data_spec(spec)


def test_missing_data_directory(tmp_path):
    with pytest.raises(AxnetError, match="directory not found"):
        D.load_data(f"mnist:{tmp_path / 'nope'}")


def slow_shift(image, dy, dx, m, fill):
    """Reference: place each pixel at its shifted position one by one."""
    c, h, w = image.shape
    out = torch.full_like(image, fill)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy - m, j + dx - m
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = image[:, si, sj]
    return out


def test_random_shift_matches_a_pixel_by_pixel_reference():
    x = torch.randn(5, 2, 7, 6)
    g = torch.Generator().manual_seed(3)
    shifted = D.random_shift(x, 2, g, fill=-1.5)
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 5, (5,), generator=g)
    dx = torch.randint(0, 5, (5,), generator=g)
    for n in range(5):
        assert torch.equal(shifted[n], slow_shift(x[n], int(dy[n]), int(dx[n]), 2, -1.5))


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.randn(8, 3, 32, 32)
    a = D.augment_batch(x, "crop-flip", torch.Generator().manual_seed(5))
    b = D.augment_batch(x, "crop-flip", torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


def test_random_affine_identity_and_background():
    """No rotation, scale or shift gives the image back; a transform keeps the background value at the borders
    (what flows in is `fill`, not zero) and is repeatable from the generator."""
    x = torch.full((4, 1, 28, 28), -0.42)
    x[:, :, 10:18, 12:16] = 2.8
    same = D.random_affine(x, torch.Generator().manual_seed(1), degrees=0, scale=0, shift=0, fill=-0.42)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    moved = D.augment_batch(x, "affine", torch.Generator().manual_seed(2))
    again = D.augment_batch(x, "affine", torch.Generator().manual_seed(2))
    assert torch.equal(moved, again) and not torch.allclose(moved, x)
    background = -D.MNIST_MEAN / D.MNIST_STD
    x = torch.full((2, 1, 28, 28), background)
    torch.testing.assert_close(D.augment_batch(x, "affine", torch.Generator().manual_seed(3)), x, atol=1e-5, rtol=0)


def test_augmentation_must_suit_the_data():
    """Digits take shift or affine (filled with their background), CIFAR crop-flip; a mismatch names --augment."""
    digits = D.DataSet("mnist5k", torch.zeros(2, 1, 28, 28), torch.zeros(2), torch.zeros(1, 1, 28, 28),
                       torch.zeros(1), augment="shift")
    D.check_augmentation("affine", digits)
    D.check_augmentation("", digits)
    with pytest.raises(AxnetError, match="--augment crop-flip does not suit --data mnist5k: use shift or affine"):
        D.check_augmentation("crop-flip", digits)
    cifar = D.DataSet("cifar10", torch.zeros(2, 3, 32, 32), torch.zeros(2), torch.zeros(1, 3, 32, 32),
                      torch.zeros(1), augment="crop-flip")
    with pytest.raises(AxnetError, match="--augment affine does not suit --data cifar10"):
        D.check_augmentation("affine", cifar)
