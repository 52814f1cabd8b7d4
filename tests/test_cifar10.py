"""CIFAR-10 read from its binary and python directories; the python batches through the restricted unpickler."""
import pickle

import numpy as np
import pytest

from circuits.errors import AxnetError
from dnn import cifar10 as C
from dnn import data as D


def batches(per_batch=3, seed=2):
    """Random (data uint8 (N, 3072), labels list) for each of the six batch files, by name."""
    rng = np.random.default_rng(seed)
    return {name: (rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                   rng.integers(0, 10, size=per_batch).tolist()) for name in C.TRAIN_FILES + [C.TEST_FILE]}


def write_python_dir(directory, content, protocol=2):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in content.items():
        with open(directory / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data,
                         b"filenames": [b"a.png"] * len(labels)}, f, protocol=protocol)


def write_binary_dir(directory, content):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in content.items():
        records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)
        (directory / (name + ".bin")).write_bytes(records.tobytes())


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_binary_and_python_directories_give_the_same_tensors(tmp_path, protocol):
    content = batches()
    write_python_dir(tmp_path / "py", content, protocol)
    write_binary_dir(tmp_path / "bin", content)
    a, b = D.load_data(f"cifar10:{tmp_path / 'py'}"), D.load_data(f"cifar10:{tmp_path / 'bin'}")
    assert a.train_x.shape == (15, 3, 32, 32) and a.test_x.shape == (3, 3, 32, 32)
    assert a.train_x.equal(b.train_x) and a.test_x.equal(b.test_x)
    assert a.train_y.tolist() == b.train_y.tolist() == sum((content[n][1] for n in C.TRAIN_FILES), [])
    # pixel (channel 1, row 2, column 3) of the first test image is byte 1024 + 2 * 32 + 3 of its record
    raw = content[C.TEST_FILE][0][0, 1024 + 2 * 32 + 3] / 255
    assert float(b.test_x[0, 1, 2, 3]) == pytest.approx((raw - D.CIFAR_MEAN[1]) / D.CIFAR_STD[1], abs=1e-5)


def test_the_official_subdirectory_is_found_and_binary_is_preferred(tmp_path):
    content = batches()
    write_binary_dir(tmp_path / "cifar-10-batches-bin", content)
    write_python_dir(tmp_path / "cifar-10-batches-py", batches(seed=9))
    d = D.load_data(f"cifar10:{tmp_path}")
    assert d.test_y.tolist() == content[C.TEST_FILE][1]


def test_truncated_binary_batch_and_empty_directory(tmp_path):
    write_binary_dir(tmp_path, batches())
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(AxnetError, match="data_batch_2.bin: .* not a whole number of 3073-byte"):
        D.load_data(f"cifar10:{tmp_path}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AxnetError, match="no CIFAR-10 batches here"):
        D.load_data(f"cifar10:{tmp_path / 'empty'}")


class Marker:
    """Unpickling this runs open(path, 'w'): the marker file appears if the pickle was executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_hostile_python_batch_is_refused_and_not_run(tmp_path):
    write_python_dir(tmp_path, batches())
    marker = tmp_path.parent / (tmp_path.name + "-marker")
    with open(tmp_path / "data_batch_4", "wb") as f:
        pickle.dump({b"data": Marker(str(marker)), b"labels": [1]}, f, protocol=2)
    with pytest.raises(AxnetError, match=r"data_batch_4: refused: the pickle asks for (builtins|_?io)\.open"):
        D.load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_object_arrays_and_other_codecs_are_refused(tmp_path):
    write_python_dir(tmp_path, batches())
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.array([1, "x"], dtype=object), b"labels": [1]}, f, protocol=2)
    with pytest.raises(AxnetError, match="test_batch: not a CIFAR-10 python batch"):
        D.load_data(f"cifar10:{tmp_path}")
    assert pickle.dumps(b"ab", protocol=2).count(b"latin1") == 1
    sneaky = pickle.dumps(b"ab", protocol=2).replace(b"latin1", b"rot_13")
    with pytest.raises(pickle.UnpicklingError, match="codec"):
        C.safe_unpickle(sneaky)


def test_the_restricted_unpickler_reads_plain_data_exactly():
    value = {b"k": [1, 2, b"x", "s", 3.5, None, True], b"a": np.arange(12, dtype=np.int64).reshape(3, 4)}
    for protocol in (2, 3, 4, 5):
        got = C.safe_unpickle(pickle.dumps(value, protocol=protocol))
        assert got[b"k"] == value[b"k"] and np.array_equal(got[b"a"], value[b"a"])
    # the real files were written by numpy 1 under Python 2: the helper lives in numpy.core.multiarray
    old_style = pickle.dumps(value, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old_style
    assert np.array_equal(C.safe_unpickle(old_style)[b"a"], value[b"a"])
