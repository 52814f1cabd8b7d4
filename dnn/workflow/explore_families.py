"""Generated circuit families for `axnet explore --family`: the bundled generators and, when installed, ArithsGen.

A spec is `SCHEME:WIDTH[:KEY=VALUES]...`; VALUES is one value, a comma list or an inclusive range `LO..HI`, and
every combination of the listed values is one circuit:
- `rca:8:cell=maj,ama1:k=0..8`: ripple-carry adders whose low k cells are the named cells (`axnet library`);
- `loa:8:k=1..6`, `eta1:8:k=1..6`, `trunc:8:k=1..4`: lower-part OR, error-tolerant I and truncated adders;
- `mul:8`: the exact array multiplier (8x8 bits; `mul:8x4` for unequal widths).
ArithsGen (`pip install ariths-gen`, MIT, EvoApproxLib's generator) adds real approximate and exact circuits, read
back from its flat BLIF: `ag-rca`, `ag-cla`, `ag-ks` (Kogge-Stone), `ag-bk` (Brent-Kung), `ag-sk` (Sklansky)
adders; `ag-quad:8:r=4,4:p=0,2` (QuAd: one sub-adder of r_i bits with p_i prediction bits each); multipliers
`ag-array`, `ag-wallace`, `ag-dadda`, `ag-tm:8:k=0..6` (truncated array, cut k), `ag-bam:8:h=0..2:v=0..8`
(broken array, horizontal and vertical cuts), `ag-rm:8:m=1..4` (recursive, approximate 2x2 blocks M1..M4).
"""
from __future__ import annotations

import contextlib
import io
import itertools
import re

from circuits.errors import AxnetError

BUNDLED = ("rca", "loa", "eta1", "trunc", "mul")
ARITHSGEN = ("ag-rca", "ag-cla", "ag-ks", "ag-bk", "ag-sk", "ag-quad", "ag-array", "ag-wallace", "ag-dadda", "ag-tm",
             "ag-bam", "ag-rm")
KEYS = {"rca": ("cell", "k"), "loa": ("k",), "eta1": ("k",), "trunc": ("k",), "mul": (), "ag-quad": ("r", "p"),
        "ag-tm": ("k",), "ag-bam": ("h", "v"), "ag-rm": ("m",)}
MAX_FAMILY = 10_000  # circuits one spec may expand to: a typo such as k=0..80000 should not hang the run


def parse_values(spec, key, text):
    """'3' -> ['3']; '1..4' -> ['1', '2', '3', '4']; 'maj,ama1' -> ['maj', 'ama1']."""
    if ".." in text:
        lo, _, hi = text.partition("..")
        try:
            lo, hi = int(lo), int(hi)
        except ValueError:
            raise AxnetError(f"--family '{spec}': {key}={text} is not a range LO..HI of integers") from None
        if hi < lo or hi - lo >= MAX_FAMILY:
            raise AxnetError(f"--family '{spec}': {key}={text} must run upwards over at most {MAX_FAMILY} values")
        return [str(v) for v in range(lo, hi + 1)]
    values = [v for v in text.split(",") if v]
    if not values:
        raise AxnetError(f"--family '{spec}': {key}= has no value")
    return values


def parse_width(spec, text, scheme):
    """'8' -> (8, 8); '8x4' -> (8, 4) for multipliers only."""
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text or "")
    if not m or (m.group(2) and scheme not in ("mul", "ag-array", "ag-wallace", "ag-dadda", "ag-tm", "ag-bam")):
        raise AxnetError(f"--family '{spec}': expected SCHEME:WIDTH (e.g. {scheme}:8), not '{text}'")
    wa = int(m.group(1))
    wb = int(m.group(2)) if m.group(2) else wa
    if not 1 <= wa <= 64 or not 1 <= wb <= 64:
        raise AxnetError(f"--family '{spec}': width {text} is outside 1..64")
    return wa, wb


def parse_family(spec):
    """(scheme, (wa, wb), [options dict per circuit]) for one --family spec."""
    parts = str(spec).strip().split(":")
    scheme = parts[0].lower()
    if scheme not in BUNDLED + ARITHSGEN:
        raise AxnetError(f"--family '{spec}': unknown scheme '{parts[0]}' (bundled: {', '.join(BUNDLED)}; "
                         f"with ariths-gen installed: {', '.join(ARITHSGEN)})")
    widths = parse_width(spec, parts[1] if len(parts) > 1 else "", scheme)
    allowed = KEYS.get(scheme, ())
    lists = {}
    for part in parts[2:]:
        key, sep, text = part.partition("=")
        if not sep or key not in allowed or key in lists:
            raise AxnetError(f"--family '{spec}': unexpected '{part}' (options of {scheme}: "
                             f"{', '.join(k + '=...' for k in allowed) or 'none'})")
        lists[key] = parse_values(spec, key, text)
    if scheme == "ag-quad":  # r and p are one vector each, not ranges to combine
        lists = {k: [",".join(v)] for k, v in lists.items()}
    keys = sorted(lists)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(lists[k] for k in keys))]
    if len(combos) > MAX_FAMILY:
        raise AxnetError(f"--family '{spec}': {len(combos)} circuits, more than {MAX_FAMILY}")
    return scheme, widths, combos


def int_option(spec, options, key, default=None):
    value = options.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AxnetError(f"--family '{spec}': {key}={value} is not an integer") from None


def family_netlists(spec):
    """[(name, Netlist)] for one --family spec, in spec order."""
    scheme, widths, combos = parse_family(spec)
    out = []
    for options in combos:
        if scheme.startswith("ag-"):
            out.append(arithsgen_netlist(spec, scheme, widths, options))
        else:
            out.append(bundled_netlist(spec, scheme, widths, options))
    return out


def bundled_netlist(spec, scheme, widths, options):
    """(name, Netlist) from circuits.generators."""
    from circuits import generators

    width = widths[0]
    if scheme == "mul":
        netlist = generators.array_multiplier(widths[0], widths[1])
        return netlist.name, netlist
    k = int_option(spec, options, "k", 0)
    if not 0 <= k <= width:
        raise AxnetError(f"--family '{spec}': k={k} is outside 0..{width}")
    if scheme == "rca":
        cell = options.get("cell", "exact")
        netlist = generators.ripple_carry_adder(width, cell=cell, approx_bits=k)
    else:
        build = {"loa": generators.loa_adder, "eta1": generators.eta1_adder, "trunc": generators.truncated_adder}
        netlist = build[scheme](width, k)
    return netlist.name, netlist


def arithsgen_available():
    """True when the ariths-gen package can be imported."""
    import importlib.util
    return importlib.util.find_spec("ariths_gen") is not None


def arithsgen_circuit(spec, scheme, widths, options):
    """(name, ArithsGen circuit object) for a spec entry."""
    if not arithsgen_available():
        raise AxnetError(f"--family '{spec}': ArithsGen families need the ariths-gen package "
                         "(pip install 'axnet[arithsgen]')")
    from ariths_gen.multi_bit_circuits import adders, approximate_adders, approximate_multipliers, multipliers
    from ariths_gen.wire_components import Bus

    wa, wb = widths
    a, b = Bus(N=wa, prefix="a"), Bus(N=wb, prefix="b")
    exact_adders = {"ag-rca": adders.UnsignedRippleCarryAdder, "ag-cla": adders.UnsignedCarryLookaheadAdder,
                    "ag-ks": adders.UnsignedKoggeStoneAdder, "ag-bk": adders.UnsignedBrentKungAdder,
                    "ag-sk": adders.UnsignedSklanskyAdder}
    exact_mults = {"ag-array": multipliers.UnsignedArrayMultiplier, "ag-wallace": multipliers.UnsignedWallaceMultiplier,
                   "ag-dadda": multipliers.UnsignedDaddaMultiplier}
    label = scheme[3:]
    if scheme in exact_adders:
        return f"ag_{label}{wa}", exact_adders[scheme](a, b, name=f"ag_{label}{wa}")
    if scheme in exact_mults:
        return f"ag_{label}{wa}x{wb}", exact_mults[scheme](a, b, name=f"ag_{label}{wa}x{wb}")
    if scheme == "ag-tm":
        k = int_option(spec, options, "k", 0)
        name = f"ag_tm{wa}x{wb}_k{k}"
        return name, approximate_multipliers.UnsignedTruncatedArrayMultiplier(a, b, truncation_cut=k, name=name)
    if scheme == "ag-bam":
        h, v = int_option(spec, options, "h", 0), int_option(spec, options, "v", 0)
        name = f"ag_bam{wa}x{wb}_h{h}_v{v}"
        return name, approximate_multipliers.UnsignedBrokenArrayMultiplier(a, b, horizontal_cut=h, vertical_cut=v,
                                                                           name=name)
    if scheme == "ag-rm":
        return recursive_multiplier(spec, a, b, wa, int_option(spec, options, "m", 1))
    return quad_adder(spec, a, b, wa, options, approximate_adders)


def recursive_multiplier(spec, a, b, width, m):
    """An ArithsGen recursive multiplier built from approximate 2x2 blocks M1..M4."""
    from ariths_gen.multi_bit_circuits import approximate_multipliers as am

    blocks = {1: am.UnsignedApproximateTwoBitMultiplierM1, 2: am.UnsignedApproximateTwoBitMultiplierM2,
              3: am.UnsignedApproximateTwoBitMultiplierM3, 4: am.UnsignedApproximateTwoBitMultiplierM4}
    if m not in blocks or width < 2 or width & (width - 1):
        raise AxnetError(f"--family '{spec}': ag-rm takes m=1..4 and a power-of-two width >= 2")
    count = (width // 2) ** 2
    name = f"ag_rm{width}_m{m}"
    return name, am.UnsignedRecursiveMultiplier(a, b, name=name, submultipliers=[blocks[m]] * count)


def quad_adder(spec, a, b, width, options, approximate_adders):
    """An ArithsGen QuAd adder from its sub-adder widths r and prediction bits p."""
    try:
        r = [int(v) for v in options.get("r", str(width)).split(",")]
        p = [int(v) for v in options.get("p", "0").split(",")]
    except ValueError:
        raise AxnetError(f"--family '{spec}': r= and p= are comma lists of integers") from None
    if len(p) == 1 and len(r) > 1:
        p = p * len(r)
    if sum(r) != width or len(p) != len(r):
        raise AxnetError(f"--family '{spec}': QuAd needs r= summing to the width {width} and one p per r")
    name = f"ag_quad{width}_r{'-'.join(map(str, r))}_p{'-'.join(map(str, p))}"
    return name, approximate_adders.QuAdder(a, b, R=r, P=p, prefix="", name=name)


def arithsgen_netlist(spec, scheme, widths, options):
    """(name, Netlist): the circuit's flat BLIF from ArithsGen, read back with axnet's BLIF reader."""
    from circuits.blif import parse_blif

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            name, circuit = arithsgen_circuit(spec, scheme, widths, options)
    except AxnetError:
        raise
    except Exception as e:  # ArithsGen asserts on parameters it does not support
        raise AxnetError(f"--family '{spec}': ArithsGen refused these parameters ({type(e).__name__}: "
                         f"{str(e) or 'no message'})") from None
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # some generators print debugging output
            circuit.get_blif_code_flat(text)
    except Exception as e:  # a generator bug for these parameters, reported as the spec's fault
        raise AxnetError(f"--family '{spec}': ArithsGen could not build {name} ({type(e).__name__}: {e})") from None
    return name, parse_blif(text.getvalue(), source=f"ariths-gen:{name}")
