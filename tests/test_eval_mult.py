"""`axnet eval --mult`: a CNN checkpoint's convolution and linear layers on an approximate multiplier."""
import json

import pytest
from click.testing import CliRunner

from circuits.blif import write_blif
from circuits.generators import array_multiplier, loa_adder
from cli import main
from cli_runs import train_tiny
from dnn.arith.spec import parse_mult
from dnn.workflow import data_for_checkpoint, evaluate
from dnn.workflow.checkpoint import load_checkpoint
from dnn.workflow.prepare import model_from_checkpoint, prepare_mult


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cnn"
    train_tiny(out, "--model", "mnist-cnn", "--limit", 128, "--batch-size", 32, "--epochs", 2)
    return out / "last.pt"


@pytest.fixture(scope="module")
def circuits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("circuits")
    paths = {"mul6": folder / "mul6.blif", "mul12": folder / "mul12.blif", "add8": folder / "add8.blif"}
    write_blif(array_multiplier(6, 6), paths["mul6"])
    write_blif(array_multiplier(12, 12), paths["mul12"])
    write_blif(loa_adder(8, 2), paths["add8"])
    return paths


def api_accuracy(checkpoint, spec, test_limit):
    """The same row through the API: convert, calibrate, evaluate."""
    ckpt = load_checkpoint(checkpoint)
    data = data_for_checkpoint(ckpt, test_limit=test_limit)
    model, n = prepare_mult(model_from_checkpoint(ckpt), parse_mult(spec), data, "cpu")
    return evaluate(model, data.test_x, data.test_y, device="cpu")[1], n


def test_eval_mult_rows_equal_the_api(cnn_checkpoint, circuits):
    specs = [f"circuit:{circuits['mul6']}", f"circuit:{circuits['mul12']}:weights=channel"]
    args = ["eval", str(cnn_checkpoint), "--limit-test", "40", "--json"]
    for spec in specs:
        args += ["--mult", spec]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["arith"].split(" ")[0] for row in rows] == ["float", *[s.split(":weights")[0] for s in specs]]
    for row, spec in zip(rows[1:], specs):
        accuracy, n = api_accuracy(cnn_checkpoint, spec, 40)
        assert row["accuracy"] == accuracy and n == 1  # mnist-cnn: conv1 and fc stay exact, conv2 multiplies
        assert "1 layer; first and last exact" in row["arith"]


def test_eval_mult_through_a_lut_and_an_accumulator(cnn_checkpoint, circuits, tmp_path):
    lut = tmp_path / "mul6.npz"
    r = CliRunner().invoke(main, ["simulate", str(circuits["mul6"]), "-o", str(lut)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["eval", str(cnn_checkpoint), "--limit-test", "24", "--mult", f"lut:{lut}",
                                  "--mult", f"circuit:{circuits['mul6']}", "--json"])
    assert r.exit_code == 0, r.output
    lut_row, netlist_row = json.loads(r.stdout)[1:]
    # the table and the netlist of one circuit compute the same products: equal accuracy
    assert lut_row["accuracy"] == netlist_row["accuracy"]
    r = CliRunner().invoke(main, ["eval", str(cnn_checkpoint), "--limit-test", "24", "--mult", f"lut:{lut}",
                                  "--accum", "trunc:20:k=2", "--json"])
    assert r.exit_code == 0, r.output
    assert "trunc" in json.loads(r.stdout)[1]["arith"]


@pytest.mark.parametrize("case", ["adder", "adder lut", "addernet", "missing", "bad spec"])
def test_eval_mult_bad_input_is_one_line_exit_2(cnn_checkpoint, circuits, tmp_path, case):
    checkpoint, spec, needle = cnn_checkpoint, f"circuit:{circuits['mul6']}", None
    if case == "adder":
        spec, needle = f"circuit:{circuits['add8']}", "add8.blif"
    elif case == "adder lut":  # a table of sums would run in a multiplier layer and quietly add instead of multiply
        lut = tmp_path / "add8.npz"
        assert CliRunner().invoke(main, ["simulate", str(circuits["add8"]), "-o", str(lut)]).exit_code == 0
        spec, needle = f"lut:{lut}", "add8.npz"
    elif case == "missing":
        spec, needle = f"circuit:{tmp_path / 'none.blif'}", "none.blif"
    elif case == "bad spec":
        spec, needle = "table:x", "--mult 'table:x'"
    else:
        out = tmp_path / "adder"
        train_tiny(out, "--limit", 32)
        checkpoint, needle = out / "last.pt", "no convolution or linear layer"
    r = CliRunner().invoke(main, ["eval", str(checkpoint), "--mult", spec, "--limit-test", "8"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert needle in line and "Traceback" not in r.output
