"""Issue 12, CLI: gradlut --method ste guesses the reference as metrics does, the one table/JSON helper, --help of
every command."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from cli import main
from circuits.generators import array_multiplier, ripple_carry_adder
from lutgen.formats import load_lut, save_npz
from lutgen.lut import build_lut
from lutgen.reference import guess_reference


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("kind", ["add", "mul"])
def test_gradlut_ste_guesses_the_reference_like_metrics(tmp_path, kind):
    netlist = ripple_carry_adder(4) if kind == "add" else array_multiplier(4, 4)
    save_npz(build_lut(netlist), tmp_path / "t.npz")
    r = invoke("gradlut", tmp_path / "t.npz", "--method", "ste", "-o", tmp_path / "g.npz")
    assert r.exit_code == 0, r.output
    metrics = json.loads(invoke("metrics", tmp_path / "t.npz", "--json").stdout)
    assert metrics["reference"] == kind and f"straight-through, reference {kind} (" in r.output
    assert f"reference {kind} ({metrics['reference_reason']})" in r.output  # the same guess, the same words
    assert metrics["reference_reason"] == guess_reference(load_lut(tmp_path / "t.npz"))[1]
    grad = load_lut(tmp_path / "g.npz")
    a, b = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    want_a = np.ones((16, 16)) if kind == "add" else b
    assert np.array_equal(grad.grads[grad.operands[0][0]], want_a)
    given = invoke("gradlut", tmp_path / "t.npz", "--method", "ste", "--reference", "sub", "-o", tmp_path / "s.npz")
    assert given.exit_code == 0 and "reference sub (given)" in given.output


def test_one_table_helper_aligns_every_column(capsys):
    cli.echo_table([("a", 1, "x"), ("long label", 22, "y")], header=("name", "n", "z"))
    assert capsys.readouterr().out.splitlines() == ["name        n   z", "a           1   x", "long label  22  y"]
    cli.echo_table([("circuit", "add8"), ("reference", "add (given)")])
    assert capsys.readouterr().out.splitlines() == ["circuit    add8", "reference  add (given)"]
    cli.echo_json({"b": 1, "a": [1.5]})
    assert json.loads(capsys.readouterr().out) == {"b": 1, "a": [1.5]}
    assert not hasattr(cli, "train_echo_rows") and not hasattr(cli, "train_echo_json")


def test_every_command_has_help():
    for name in main.commands:
        r = invoke(name, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output, name


def test_a_non_number_float_option_is_still_clicks_usage_error(tmp_path):
    r = invoke("train", "--model", "mnist-cnn", "--lr", "fast", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "'fast' is not a number" in r.output and not (tmp_path / "x").exists()
