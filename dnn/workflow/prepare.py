"""Models and arithmetic for a run: rebuild a model from a checkpoint, put a back-end on its layers, calibrate."""
from __future__ import annotations

from circuits.errors import AxnetError
from dnn.models import build_model, model_input, strip_module_prefix


def adaptive_scale(model, eta):
    """The AdderNet adaptive learning-rate step on every adder layer (no-op for a model without adder layers)."""
    from dnn.layers.assign import adaptive_lr_scale_
    adaptive_lr_scale_(model, eta)


def set_model_arith(model, arith):
    """Give every adder layer of `model` the back-end `arith` (None = float); returns how many layers."""
    from dnn.layers.assign import set_arith
    return set_arith(model, arith)


def parse_arith_text(text):
    """`float` -> None, anything else through `dnn.arith.parse_arith` (errors name --arith)."""
    from dnn.arith.spec import parse_arith
    return None if text is None else parse_arith(text)


def arith_label(arith):
    """One-line description of a back-end (float for None)."""
    return "float" if arith is None else arith.describe()


def arith_sha(arith):
    """The circuit sha256 of a back-end, or None."""
    return None if arith is None else getattr(arith, "sha256", None)


def check_model_data(model_name, data):
    """Refuse a model that expects other images than the data set holds, naming both options."""
    channels, side = model_input(model_name)
    have = tuple(data.train_x.shape[1:])
    if have != (channels, side, side):
        raise AxnetError(f"--model {model_name} expects {channels}x{side}x{side} images but --data {data.name} "
                         f"holds {'x'.join(map(str, have))}")


def shape_mismatch(model, state):
    """The first entry of `state` whose shape differs from the model's, as a message, or None."""
    expected = model.state_dict()
    for key, value in state.items():
        want = expected.get(key)
        if want is not None and hasattr(value, "shape") and tuple(value.shape) != tuple(want.shape):
            return (f"checkpoint does not fit the model: {key} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(want.shape)}")
    return None


def key_mismatch(model, state):
    """Model entries missing from `state` (quantization scales aside), as a message, or None. Extra entries, such
    as a retrained model's calibration buffers, are ignored, as `load_state_dict(strict=False)` ignores them."""
    bad = sorted(k for k in model.state_dict() if k not in state and not k.endswith("scale"))
    if bad:
        return f"checkpoint does not fit the model: {len(bad)} mismatched entries, e.g. {bad[0]}"
    return None


def load_model_state(model, state):
    """Load weights into `model`; quantization scale buffers absent on either side are tolerated, a tensor of the
    wrong shape or a missing weight is one AxnetError naming it."""
    state = strip_module_prefix(dict(state))
    wrong = shape_mismatch(model, state) or key_mismatch(model, state)
    if wrong:
        raise AxnetError(wrong)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in list(missing) + list(unexpected) if not k.endswith("scale")]
    if bad:
        raise AxnetError(f"checkpoint does not fit the model: {len(bad)} mismatched entries, e.g. {bad[0]}")
    for key in unexpected:  # a calibrated scale on a layer whose buffer is still None
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module.register_buffer(name, state[key].clone())


def checkpoint_model(ckpt):
    """A fresh, untrained model of the kind a checkpoint names."""
    try:
        return build_model(ckpt["model"], **ckpt.get("model_kwargs", {}))
    except TypeError as e:
        raise AxnetError(f"checkpoint model_kwargs do not fit model {ckpt['model']}: {e}") from None


def state_problem(ckpt, key="state_dict"):
    """Why a checkpoint's weights `key` would not load into its model (shapes, entries), or None; nothing is
    copied, so checking a checkpoint costs one model construction."""
    model = checkpoint_model(ckpt)
    state = strip_module_prefix(dict(ckpt[key]))
    return shape_mismatch(model, state) or key_mismatch(model, state)


def model_from_checkpoint(ckpt, key="state_dict"):
    """A model rebuilt from a checkpoint's model name and weights (`key`: state_dict, or train_state_dict for the
    trained weights of a run that saves a weight average)."""
    model = checkpoint_model(ckpt)
    load_model_state(model, ckpt[key])
    return model


def cpu_state(model):
    """A model's state dict as detached CPU tensors (what checkpoints hold)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def calibrate_model(model, data, device, batches=8, batch_size=256, percentile=99.9):
    """Fix each adder layer's quantization scale the AdderQuant way: the activation range is the `percentile` of
    |x| over a few training batches, and filters with larger weights are clamped to it with an exact bias
    correction (dnn.layers.calibrate.group_clamp_weights_). Scaling by max |W| instead would waste the integer range on a
    few large weights (AdderNet weights grow under the adaptive learning rate) and cost many points at 8 bits."""
    from dnn.layers.assign import adder_layers
    from dnn.layers.calibrate import calibrate, group_clamp_weights_
    calibrate(model, calibration_batches(data, device, batches, batch_size), method="percentile",
              percentile=percentile, include_weights=False)
    for layer in adder_layers(model):
        group_clamp_weights_(layer, float(layer.scale))


def prepare_arith(model, arith, data, device, calibrate=True, accum=None):
    """Put `arith` on every adder layer and, for a quantized back-end, calibrate the scales on training data.
    `accum` (an Accumulator, None = exact sums) goes on the same layers first, so calibration sees the network as it
    will run."""
    n = set_model_arith(model, arith)
    if arith is not None and n == 0:
        raise AxnetError(f"--arith {arith_label(arith)}: the model has no adder layers to run it on")
    if accum is not None:
        from dnn.layers.assign import set_accum
        if arith is None:
            raise AxnetError(f"--accum {accum.spec}: the accumulator sums integer terms; give an integer "
                             "arithmetic too, e.g. --arith exact:8")
        set_accum(model, accum)
    if arith is not None and calibrate:
        calibrate_model(model, data, device)
    return n


def prepare_mult(model, mult, data, device, accum=None, keep_first_last=True, batches=8, batch_size=256):
    """The model with its convolution and linear layers turned into approximate-multiplier layers that compute with
    `mult` (the first and last kept exact unless keep_first_last=False, as `dnn.convert` does by default), their sums
    through `accum`, moved to `device` and their activation ranges calibrated on training data; returns
    (model, how many layers compute with `mult`)."""
    from dnn.convert import convert
    from dnn.layers.assign import set_accum, set_mult
    from dnn.layers.calibrate import calibrate_mult
    model, _ = convert(model, kind="approx_mult", arith=None, keep_first_last=keep_first_last)
    n = set_mult(model, mult)
    if n == 0:
        raise AxnetError(f"--mult {mult.describe()}: the model has no convolution or linear layer to run it on "
                         "(its first and last are kept exact)")
    if accum is not None:
        set_accum(model, accum)
    model = model.to(device)
    calibrate_mult(model, calibration_batches(data, device, batches, batch_size))
    return model, n


def calibration_batches(data, device, batches=8, batch_size=256):
    """The first `batches` batches of training images on `device`: what every calibration looks at."""
    return [data.train_x[i:i + batch_size].to(device) for i in range(0, batch_size * batches, batch_size)
            if i < len(data.train_x)]
