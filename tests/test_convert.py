"""convert(): the right layers are swapped, weights carried over, first/last kept, nested and shared modules handled."""
import numpy as np
import pytest
import torch
from torch import nn

from circuits.errors import AxnetError
from dnn.layers.adder2d import Adder2d
from dnn.layers.adder_linear import AdderLinear
from dnn.approx_mult import ApproxConv2d, ApproxLinear, LutMultiplier
from dnn.convert import convert, format_report
from lutgen.formats import save_npz
from lutgen.lut import Lut, pattern_values


def exact_mult(n=8, signed=True):
    """A LutMultiplier for the exact n-bit product."""
    v = pattern_values(n, signed)
    return LutMultiplier(Lut(table=np.outer(v, v), operands=[("a", n), ("b", n)], outputs=[], signed=signed,
                             circuit="exact"))


class Block(nn.Module):
    """A residual block with a 1x1 projection shortcut, like a ResNet downsampling block."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def small_resnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Block(8, 16, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def by_name(model):
    return dict(model.named_modules())


def test_adder_conversion_keeps_first_and_last_and_copies_weights():
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, report = convert(model, kind="adder")
    assert out is model
    mods = by_name(model)
    assert type(mods["0"]) is nn.Conv2d and type(mods["5"]) is nn.Linear
    for name in ("2.body.0", "2.body.3", "2.shortcut.0"):
        assert isinstance(mods[name], Adder2d)
        assert torch.equal(mods[name].weight, before[name + ".weight"])
        assert mods[name].bias is None
    assert mods["2.body.0"].stride == (2, 2) and mods["2.body.0"].padding == (1, 1)
    assert [(r["name"], r["new"], r["note"]) for r in report] == [
        ("0", "Conv2d", "kept: first layer"),
        ("2.body.0", "Adder2d", "replaced"),
        ("2.body.3", "Adder2d", "replaced"),
        ("2.shortcut.0", "Adder2d", "replaced"),
        ("5", "Linear", "kept: last layer"),
    ]
    assert report[1]["shape"] == (16, 8, 3, 3) and report[1]["old"] == "Conv2d"
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_convert_everything_including_linear_layers_with_bias():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    bias = model[0].bias.detach().clone()
    _, report = convert(model, kind="adder", keep_first_last=False)
    assert isinstance(model[0], AdderLinear) and isinstance(model[2], AdderLinear)
    assert torch.equal(model[0].bias, bias)
    assert all(r["note"] == "replaced" for r in report)


def test_approx_mult_conversion_passes_the_multiplier_and_stays_close_to_float():
    model = small_resnet().eval()
    x = torch.randn(3, 3, 8, 8)
    want = model(x)
    mult = exact_mult()
    convert(model, kind="approx_mult", arith=mult, keep_first_last=False)
    layers = [m for m in model.modules() if isinstance(m, (ApproxConv2d, ApproxLinear))]
    assert len(layers) == 5 and all(m.mult is mult for m in layers)
    got = model(x)
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    # converting again finds nothing left to convert
    _, report = convert(model, kind="approx_mult", arith=mult)
    assert report == []


def test_approx_mult_conversion_from_a_lut_path_and_groups(tmp_path):
    v = pattern_values(6, False)
    path = tmp_path / "exact6.npz"
    save_npz(Lut(table=np.outer(v, v), operands=[("a", 6), ("b", 6)], outputs=[], circuit="exact6"), path)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=2, dilation=2), nn.Conv2d(4, 2, 1))
    convert(model, kind="approx_mult", arith=str(path))
    assert isinstance(model[1], ApproxConv2d) and model[1].groups == 2 and model[1].dilation == (2, 2)
    assert model[1].mult.circuit == "exact6"
    assert model(torch.randn(1, 2, 9, 9)).shape == (1, 2, 3, 3)


def test_layers_an_adder_cannot_represent_are_kept_with_a_reason():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 4, 3, padding=1,
                          padding_mode="reflect"), nn.Conv2d(4, 2, 1))
    _, report = convert(model, kind="adder")
    notes = {r["name"]: r["note"] for r in report}
    assert notes["1"] == "kept: groups=4 (Adder2d has no groups)"
    assert "padding_mode='reflect'" in notes["2"]
    assert type(model[1]) is nn.Conv2d and type(model[2]) is nn.Conv2d


def test_shared_layer_is_replaced_everywhere():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), shared, nn.ReLU(), shared, nn.Conv2d(4, 1, 1))
    convert(model, kind="adder")
    assert isinstance(model[1], Adder2d) and model[1] is model[3]


def test_converting_resnet20_from_the_model_zoo():
    from dnn.models import build_model
    model = build_model("resnet20-cnn")
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    _, report = convert(model, kind="adder")
    replaced = [r["name"] for r in report if r["note"] == "replaced"]
    assert replaced == convs[1:-1]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_format_report_is_a_readable_table():
    _, report = convert(small_resnet(), kind="adder")
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["module", "old", "new", "shape", "note"]
    assert any(line.split()[:4] == ["2.body.0", "Conv2d", "Adder2d", "16x8x3x3"] for line in lines)
    assert lines[-1] == "3 of 5 layers replaced"


def test_bad_conversion_requests_are_clear_errors():
    with pytest.raises(AxnetError, match="convert kind 'mult'"):
        convert(small_resnet(), kind="mult")
    with pytest.raises(AxnetError, match="needs a LutMultiplier"):
        convert(small_resnet(), kind="approx_mult", arith=3)
    with pytest.raises(AxnetError, match="needs a dnn.arith back-end"):
        convert(small_resnet(), kind="adder", arith=exact_mult().values)
