"""Back-ends from command-line strings: `parse_arith` (adder layers) and `parse_mult` (multiplier layers)."""
from __future__ import annotations

from circuits.errors import AxnetError
from dnn.arith.base import ExactInt
from dnn.arith.cell_adder import CellAdder
from dnn.arith.lut_adder import LutAdder
from dnn.arith.lut_multiplier import LutMultiplier
from dnn.arith.netlist_adder import NetlistAdder


def _options(parts, text, allowed):
    """key=value options from the tail of an --arith spec."""
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise AxnetError(f"--arith '{text}': unexpected '{part}' (options here: "
                             f"{', '.join(k + '=...' for k in allowed)})")
        options[key] = value
    return options


def _int_option(options, key, text, default=None):
    if key not in options:
        if default is None:
            raise AxnetError(f"--arith '{text}': {key}=... is required")
        return default
    try:
        return int(options[key])
    except ValueError:
        raise AxnetError(f"--arith '{text}': {key}={options[key]} is not an integer") from None


def _path_and_options(rest, keys):
    """Split 'PATH:key=value:...' into the path (which may hold colons) and its trailing key=value parts."""
    parts = rest.split(":")
    tail = 0
    while tail < len(parts) - 1 and parts[-1 - tail].partition("=")[0] in keys:
        tail += 1
    return ":".join(parts[:len(parts) - tail]), parts[len(parts) - tail:]


def adder_file_spec(text):
    """(kind, path, grad, half window) of an adder spec naming a file, lut:PATH[:grad=lut|ste][:w=W] or
    circuit:FILE[:grad=ste|diff][:w=W], with parse_arith's defaults (a window alone asks for its gradient, else
    ste); (None, None, None, None) for the other kinds."""
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind not in ("lut", "circuit") or not rest:
        return None, None, None, None
    path, parts = _path_and_options(rest, ("grad", "w"))
    options = _options(parts, text, ("grad", "w"))
    half_window = _int_option(options, "w", text, default=-1)
    half_window = None if half_window == -1 else half_window
    windowed = "lut" if kind == "lut" else "diff"
    grad = options.get("grad", windowed if half_window is not None else "ste")
    if grad not in (windowed, "ste"):
        raise AxnetError(f"--arith '{text}': grad={grad}; a {kind} back-end takes grad={windowed} or grad=ste")
    return kind, path, grad, half_window


def parse_arith(text):
    """A back-end from a CLI string: float | exact:BITS | lut:PATH[:grad=lut|ste][:w=W] | cell:NAME:k=K[:width=W]
    | circuit:FILE[:grad=ste|diff][:w=W] (a .blif/.pla adder netlist of 3 to 32 bits, evaluated per pair).

    Returns None for "float" (exact float AdderNet).
    """
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind == "float" and not rest:
        return None
    if kind == "exact":
        try:
            return ExactInt(int(rest) if rest else 8)
        except ValueError:
            raise AxnetError(f"--arith '{text}': expected exact:BITS, e.g. exact:8") from None
    if kind == "lut" and rest:
        _, path, grad, half_window = adder_file_spec(text)
        return LutAdder(path, grad=grad, half_window=half_window)
    if kind == "cell" and rest:
        name, *parts = rest.split(":")
        options = _options(parts, text, ("k", "width", "grad"))
        return CellAdder(name, approx_bits=_int_option(options, "k", text),
                         width=_int_option(options, "width", text, default=32), grad=options.get("grad", "ste"))
    if kind == "circuit" and rest:
        _, path, grad, half_window = adder_file_spec(text)
        return NetlistAdder(path, grad=grad, half_window=half_window)
    raise AxnetError(f"--arith '{text}': expected float, exact:BITS, lut:PATH[:grad=lut|ste][:w=W], "
                     "cell:NAME:k=K[:width=W] or circuit:FILE[:grad=ste|diff][:w=W]")


def parse_mult(text):
    """A multiplier from a CLI string: float | lut:PATH[:grad=lut|ste][:w=W][:mode=unsigned|signed][:weights=...]
    | circuit:FILE[:mode=unsigned|signed][:weights=...] (a multiplier netlist of any width, evaluated per pair).

    Returns None for "float". grad defaults to "lut" when a half window w is given, else "ste".
    """
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind == "float" and not rest:
        return None
    usage = (f"--mult '{text}': expected float, "
             "lut:PATH[:grad=lut|ste][:w=W][:mode=unsigned|signed][:weights=tensor|channel] or "
             "circuit:FILE[:mode=unsigned|signed][:weights=tensor|channel]")
    if kind == "circuit" and rest:
        from dnn.arith.netlist_multiplier import NetlistMultiplier
        path, parts = _path_and_options(rest, ("mode", "weights", "grad"))
        options = _options(parts, text, ("mode", "weights", "grad"))
        return NetlistMultiplier(path, mode=options.get("mode", "unsigned"), weights=options.get("weights", "tensor"),
                                 grad=options.get("grad", "ste"))
    if kind != "lut" or not rest:
        raise AxnetError(usage)
    parts = rest.split(":")
    keys = ("grad", "w", "mode", "weights")
    tail = 0
    while tail < len(parts) - 1 and parts[-1 - tail].partition("=")[0] in keys:
        tail += 1
    path = ":".join(parts[:len(parts) - tail])
    options = {}
    for part in parts[len(parts) - tail:]:
        key, _, value = part.partition("=")
        if key in options or not value:
            raise AxnetError(usage)
        options[key] = value
    half_window = None
    if "w" in options:
        try:
            half_window = int(options["w"])
        except ValueError:
            raise AxnetError(f"--mult '{text}': w must be an integer half window") from None
    grad = options.get("grad", "lut" if half_window is not None else "ste")
    return LutMultiplier(path, mode=options.get("mode"), grad=grad, half_window=half_window,
                         weights=options.get("weights", "tensor"))
