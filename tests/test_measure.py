"""`axnet metrics` picks its reference like lutgen.measure says: by shape for circuits, by values for LUT files."""
from __future__ import annotations

import json

from click.testing import CliRunner

import cli
from circuits.generators import array_multiplier, ripple_carry_adder
from lutgen.formats import write_adapt_header
from lutgen.lut import build_lut
from lutgen.measure import circuit_metrics, lut_metrics


def metrics_json(*args):
    result = CliRunner().invoke(cli.main, ["metrics", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_adapt_header_of_an_adder_is_measured_against_addition(tmp_path):
    """An 8-bit signed adder's table as an AdaPT header (no recorded reference): the values say add, not mul."""
    lut = build_lut(ripple_carry_adder(8, cell="maj", approx_bits=3), widths=[8, 8], signed=True)
    path = tmp_path / "adder.h"
    write_adapt_header(lut, path)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "reference" not in line) + "\n")
    data = metrics_json(path)
    assert data["reference"] == "add", data["reference_reason"]
    assert data["metrics"] == json.loads(json.dumps(lut_metrics(lut, "add")[3], default=float))


def test_circuits_keep_the_shape_rule():
    reference, why, mode, _ = circuit_metrics(array_multiplier(3, 3))
    assert (reference, mode) == ("mul", "exhaustive") and "outputs" in why
    reference, why, _, _ = circuit_metrics(ripple_carry_adder(4))
    assert reference == "add" and "default" in why
