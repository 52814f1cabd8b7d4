"""The model zoo: shapes, the exact seed-000 network, and checkpoints under the official AdderNet module names."""
import pytest
import torch
from torch import nn

from circuits.errors import AxnetError
from dnn.layers.adder2d import Adder2d
from dnn.layers.assign import adder_layers
from dnn.layers.adder_linear import AdderLinear
from dnn.models import MODELS, build_model, model_input, strip_module_prefix


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_its_images_to_ten_logits(name):
    torch.manual_seed(0)
    channels, side = model_input(name)
    model = build_model(name)
    out = model(torch.randn(2, channels, side, side))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()  # every parameter receives a gradient
    assert all(p.grad is not None for p in model.parameters())


def test_mnist_addernet_is_exactly_the_seed_000_network():
    m = build_model("mnist-addernet")
    layers = [mod for mod in m.modules() if not isinstance(mod, (nn.Sequential,)) and mod is not m]
    kinds = [type(mod).__name__ for mod in layers]
    assert kinds == ["Adder2d", "BatchNorm2d", "Adder2d", "BatchNorm2d", "ReLU", "AdaptiveAvgPool2d", "Linear"]
    a1, a2 = m.conv1, m.conv2
    assert (a1.in_channels, a1.out_channels, a1.kernel_size, a1.padding) == (1, 16, (3, 3), (1, 1))
    assert (a2.in_channels, a2.out_channels, a2.kernel_size, a2.padding) == (16, 32, (3, 3), (1, 1))
    assert (m.fc.in_features, m.fc.out_features) == (32, 10)
    # the CNN baseline has the same shape with ordinary convolutions and no adder layers
    cnn = build_model("mnist-cnn")
    assert isinstance(cnn.conv1, nn.Conv2d) and cnn.conv2.weight.shape == a2.weight.shape
    assert adder_layers(cnn) == []


def test_lenet5_and_resnet20_keep_first_layer_and_classifier_as_multiplications():
    lenet = build_model("lenet5-addernet")
    assert isinstance(lenet.conv1, nn.Conv2d) and isinstance(lenet.fc3, nn.Linear)
    assert isinstance(lenet.conv2, Adder2d) and isinstance(lenet.fc1, AdderLinear)
    resnet = build_model("resnet20-addernet")
    assert isinstance(resnet.conv1, nn.Conv2d) and isinstance(resnet.fc, nn.Conv2d)
    # 9 blocks x 2 3x3 layers + 2 downsampling 1x1 layers are adder layers
    assert len(adder_layers(resnet)) == 20
    assert sum(p.numel() for p in build_model("resnet20-cnn").parameters()) == pytest.approx(272_000, rel=0.01)


OFFICIAL_RESNET20_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.running_mean", "layer1.0.conv1.adder", "layer1.0.bn1.weight",
    "layer1.2.conv2.adder", "layer2.0.conv1.adder", "layer2.0.downsample.0.adder", "layer2.0.downsample.1.weight",
    "layer3.0.downsample.0.adder", "layer3.2.bn2.running_var", "fc.weight", "bn2.weight", "bn2.running_mean",
]


def official_style(state):
    """Our state dict renamed the way the official AdderNet checkpoint stores it (DataParallel, 'adder')."""
    out = {}
    for k, v in state.items():
        if ".conv" in k and k.endswith(".weight") and k.startswith("layer") or "downsample.0.weight" in k:
            k = k[: -len("weight")] + "adder"
        out["module." + k] = v
    return out


def test_resnet20_loads_a_checkpoint_under_the_official_adder_names():
    torch.manual_seed(1)
    src = build_model("resnet20-addernet").eval()
    state = official_style(src.state_dict())
    for key in OFFICIAL_RESNET20_KEYS:
        assert "module." + key in state
    dst = build_model("resnet20-addernet").eval()
    dst.load_state_dict(strip_module_prefix(state))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(dst(x), src(x))


def test_unknown_model_is_a_one_line_error_listing_the_choices():
    with pytest.raises(AxnetError, match="--model 'vgg'.*mnist-addernet"):
        build_model("vgg")
