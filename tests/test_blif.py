"""BLIF reader and writer: real published netlists, every syntax feature, every refusal, and write/read round trips."""
import random
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits.blif import BlifWarning, parse_blif, read_blif, write_blif
from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node
from circuits.truthtable import truth_table

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "appmult"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture directory {FIXTURES} is absent")

CIRCUITS = [
    "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols",
    "Mult_7_7_MED_63.6771_size_178_depth_23",
    "mul7u_08E",
]


def read_lutfp(path):
    """{(A, B): V} from a published `*_lutfp.txt` file (lines after the 'LUT for approximate multiplier:' header)."""
    lines = path.read_text().splitlines()
    start = lines.index("LUT for approximate multiplier:") + 1
    table = {}
    for line in lines[start:]:
        if line.strip():
            a, b, v = map(int, line.split())
            table[a, b] = v
    return table


def values(netlist):
    """Every output word, in pattern order (bit-parallel evaluation, itself checked against evaluate_int)."""
    return truth_table(netlist)


# -- real files -----------------------------------------------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("stem", CIRCUITS)
def test_published_blif_reproduces_published_lut(stem):
    netlist = read_blif(FIXTURES / f"{stem}_sop.blif")
    lut = read_lutfp(FIXTURES / f"{stem}_lutfp.txt")
    n = len(netlist.inputs) // 2
    assert len(lut) == 4 ** n
    rng = random.Random(stem)
    for a, b in rng.sample(sorted(lut), 60):  # the slow reference evaluator on a sample
        assert netlist.evaluate_int(a + (b << n)) == lut[a, b], (a, b)
    table = values(netlist)  # and every row through the bit-parallel evaluator
    assert all(table[a + (b << n)] == v for (a, b), v in lut.items())


@needs_fixtures
def test_hierarchical_genmul_file_is_flattened_with_yosys_constants():
    netlist = read_blif(FIXTURES / "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols_sop.blif")
    assert netlist.name == "Mult_6_6"
    assert netlist.inputs == [f"IN1[{i}]" for i in range(6)] + [f"IN2[{i}]" for i in range(6)]
    assert netlist.outputs == [f"Out[{i}]" for i in range(12)]
    assert netlist.nodes["$false"] == Node("$false", (), (), 1)
    # two instances of one model get distinct internal nets
    full_adders = {name.split("/")[0] for name in netlist.nodes if name.startswith("FullAdder_")}
    assert len(full_adders) > 1
    # the file's constant-one model drives its output from the undriven `$true`, which must read as 1
    one = read_blif(FIXTURES / "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols_sop.blif", top="ConstatntOne")
    assert one.inputs == [] and one.evaluate_int(0) == 1


@needs_fixtures
def test_abc_file_with_offset_covers_and_constants():
    netlist = read_blif(FIXTURES / "Mult_7_7_MED_63.6771_size_178_depth_23_sop.blif")
    assert any(node.polarity == 0 for node in netlist.nodes.values())
    assert netlist.evaluate_int(0) == 88  # AM(0, 0) = 88 in the published LUT


@needs_fixtures
def test_flattened_fixture_survives_write_and_read(tmp_path):
    original = read_blif(FIXTURES / "6_6_U_SP_WT_CL_GenMul_vertical_truncation_4cols_sop.blif")
    write_blif(original, tmp_path / "flat.blif")
    again = read_blif(tmp_path / "flat.blif")
    assert (again.inputs, again.outputs) == (original.inputs, original.outputs)
    assert values(again) == values(original)


# -- syntax ---------------------------------------------------------------------------------------------------------

def test_truth_table_helper_agrees_with_evaluate_int():
    text = """.model m
.inputs a b c
.outputs x y z
.names a b t
1- 1
-0 1
.names t c x
11 0
.names a c y
01 1
10 1
.names z
1
.end
"""
    netlist = parse_blif(text)
    assert values(netlist) == [netlist.evaluate_int(p) for p in range(8)]


def test_continuations_comments_offset_and_constants():
    text = """# leading comment
.model m   # trailing comment
.inputs a \\
  b
.inputs c
.outputs x one zero1 zero2 \\
 zero3
.default_input_arrival 0 0
.names a b \\
  c x   # off-set cover: x = NOT (a b c all 1)
111 0
.names one
 1
.names zero1
 0
.names zero2
.names zero3
0
.end
"""
    netlist = parse_blif(text, source="m.blif")
    assert netlist.inputs == ["a", "b", "c"]
    assert netlist.outputs == ["x", "one", "zero1", "zero2", "zero3"]
    for p in range(8):
        x = 0 if p == 7 else 1
        assert netlist.evaluate_int(p) == x | 2


def test_dont_cares_and_conn_buffer():
    text = ".model m\n.inputs a b\n.outputs y w\n.names a b y\n1- 1\n-1 1\n.conn y w\n.end\n"
    netlist = parse_blif(text)
    assert [netlist.evaluate_int(p) for p in range(4)] == [0, 3, 3, 3]


def test_missing_end_and_no_model_line_are_accepted():
    netlist = parse_blif(".inputs a\n.outputs y\n.names a y\n0 1\n", source="dir/inv.blif")
    assert netlist.name == "inv"
    assert [netlist.evaluate_int(p) for p in range(2)] == [1, 0]


HIER = """.model top
.inputs a b c
.outputs s co
.subckt ha x=a y=b s=t1 c=c1
.subckt ha x=t1 y=c s=s c=c2
.names c1 c2 co
1- 1
-1 1
.end

.model ha
.inputs x y
.outputs s c
.names x y n
11 1
.names n c
1 1
.names x y s
10 1
01 1
.end
"""


def test_subckt_flattening_gives_a_full_adder():
    netlist = parse_blif(HIER)
    assert netlist.inputs == ["a", "b", "c"] and netlist.outputs == ["s", "co"]
    for p in range(8):
        total = (p & 1) + (p >> 1 & 1) + (p >> 2 & 1)
        assert netlist.evaluate_int(p) == (total & 1) | ((total >> 1) << 1)
    internal = [name for name in netlist.nodes if name.endswith("/n")]
    assert len(internal) == 2 and len(set(internal)) == 2


def test_top_can_be_chosen_and_unknown_top_is_an_error():
    netlist = parse_blif(HIER, top="ha")
    assert netlist.inputs == ["x", "y"]
    assert [netlist.evaluate_int(p) for p in range(4)] == [0, 1, 1, 2]
    with pytest.raises(AxnetError, match="no model named 'nope'"):
        parse_blif(HIER, source="h.blif", top="nope")


def test_internal_names_never_collide_with_top_level_nets():
    text = HIER.replace("c1 c2 co", "c1 c2 co").replace(".outputs s co", ".outputs s co ha_1/n")
    text = text.replace(".end\n\n.model ha", ".names a ha_1/n\n1 1\n.end\n\n.model ha", 1)
    netlist = parse_blif(text)
    assert netlist.evaluate([1, 0, 0])[2] == 1 and netlist.evaluate([0, 1, 1])[2] == 0


def test_yosys_constants_are_global_and_undriven_ones_tied():
    text = """.model top
.inputs a
.outputs y z u
.subckt one o=y
.names a $false z
1- 1
-1 1
.names $undef u
1 1
.end
.model one
.outputs o
.names $true o
1 1
.end
"""
    netlist = parse_blif(text)
    assert [netlist.evaluate_int(p) for p in range(2)] == [0b001, 0b011]


def test_undriven_net_is_an_error_or_tied_to_zero_with_a_warning():
    text = ".model m\n.inputs a\n.outputs y\n.names a ghost y\n11 1\n.end\n"
    with pytest.raises(AxnetError, match=r"^u\.blif:4: net 'ghost' is used but never driven"):
        parse_blif(text, source="u.blif")
    with pytest.warns(BlifWarning, match="ghost"):
        netlist = parse_blif(text, source="u.blif", undriven="zero")
    assert [netlist.evaluate_int(p) for p in range(2)] == [0, 0]


def test_dead_logic_on_undriven_nets_is_dropped_with_one_warning():
    # as Yosys writes cell-instance Verilog without opt_clean -purge: buffers read undriven nets and drive nothing
    text = (".model m\n.inputs a b\n.outputs y\n.names a b y\n11 1\n"
            ".names n112.A n112.Y\n1 1\n.names n113.A n113.Y\n1 1\n.names n113.Y b dead2\n11 1\n.end\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        netlist = parse_blif(text, source="y.blif")
    messages = [str(w.message) for w in caught if issubclass(w.category, BlifWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith("y.blif: 2 undriven nets") and "3 nodes" in messages[0]
    assert sorted(netlist.nodes) == ["y"] and [netlist.evaluate_int(p) for p in range(4)] == [0, 0, 0, 1]
    with warnings.catch_warnings(record=True) as caught:  # the same with undriven="zero": dropped, not tied
        warnings.simplefilter("always")
        assert sorted(parse_blif(text, source="y.blif", undriven="zero").nodes) == ["y"]
    assert len(caught) == 1


def test_undriven_net_inside_an_output_cone_is_still_refused_next_to_dead_logic():
    text = (".model m\n.inputs a\n.outputs y\n.names a t y\n11 1\n.names ghost t\n1 1\n"
            ".names dead.A dead.Y\n1 1\n.end\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AxnetError, match=r"^u\.blif:6: net 'ghost' is used but never driven"):
            parse_blif(text, source="u.blif")
        netlist = parse_blif(text, source="u.blif", undriven="zero")
    assert "dead.Y" not in netlist.nodes and netlist.nodes["ghost"] == Node("ghost", (), (), 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_blif(text, source="u.blif", undriven="zero")
    messages = [str(w.message) for w in caught]
    assert messages[0] == ("u.blif: 1 undriven net (e.g. 'dead.A') feeds only logic that reaches no output; "
                           "dropped that dead logic (1 node)")
    assert messages[1:] == ["u.blif: net 'ghost' is used but never driven; tied to constant 0"]


def test_dead_logic_without_undriven_nets_is_kept_and_silent():
    text = ".model m\n.inputs a\n.outputs y\n.names a y\n1 1\n.names a spare\n0 1\n.end\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(parse_blif(text).nodes) == ["spare", "y"]


def test_subckt_hierarchy_five_thousand_levels_deep_flattens():
    depth = 5000
    parts = [".model m0\n.inputs a\n.outputs y\n.subckt m1 x=a y=y\n.end"]
    for k in range(1, depth):
        parts.append(f".model m{k}\n.inputs x\n.outputs y\n.subckt m{k + 1} x=x y=t\n.names t y\n1 1\n.end")
    parts.append(f".model m{depth}\n.inputs x\n.outputs y\n.names x y\n0 1\n.end")
    netlist = parse_blif("\n".join(parts) + "\n", source="deep.blif")
    assert len(netlist.nodes) == depth and netlist.depth() == depth
    assert [netlist.evaluate_int(p) for p in range(2)] == [1, 0]
    # recursion is still found at depth, and named by its chain
    looped = "\n".join(parts[:-1] + [f".model m{depth}\n.inputs x\n.outputs y\n.subckt m3 x=x y=y\n.end"])
    with pytest.raises(AxnetError, match=rf"recursive .subckt: m0 -> m1 -> .* -> m{depth} -> m3"):
        parse_blif(looped + "\n", source="deep.blif")


def test_exponential_hierarchy_is_refused_before_any_work():
    # each model instantiates the next twice: 40 levels would flatten to 2^40 instances
    depth = 40
    parts = [".model m0\n.inputs a\n.outputs y\n.subckt m1 x=a y=y\n.end"]
    for k in range(1, depth):
        parts.append(f".model m{k}\n.inputs x\n.outputs y\n.subckt m{k + 1} x=x y=t\n.subckt m{k + 1} x=t y=y\n.end")
    parts.append(f".model m{depth}\n.inputs x\n.outputs y\n.names x y\n0 1\n.end")
    with pytest.raises(AxnetError, match=r"^bomb.blif:1: the .subckt hierarchy of model 'm0' expands to "
                                         rf"{2 ** depth - 1} instances"):
        parse_blif("\n".join(parts) + "\n", source="bomb.blif")


def test_netlist_output_cone_and_remove_downstream():
    nodes = {n: Node(n, f, ("1" * len(f),)) for n, f in
             [("t", ("a",)), ("y", ("t", "b")), ("d1", ("ghost",)), ("d2", ("d1", "a")), ("d3", ("b",))]}
    net = Netlist("m", ["a", "b"], ["y"], dict(nodes))
    assert net.output_cone() == {"y", "t", "a", "b"}
    assert net.remove_downstream(["ghost"]) == ["d1", "d2"]
    assert sorted(net.nodes) == ["d3", "t", "y"]


def test_yosys_constants_do_not_warn():
    text = ".model m\n.inputs a\n.outputs y\n.names a $true y\n11 1\n.end\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        netlist = parse_blif(text, undriven="zero")
    assert [netlist.evaluate_int(p) for p in range(2)] == [0, 1]


# -- refusals: each names path:line ----------------------------------------------------------------------------------

BAD = [
    (".model m\n.inputs a\n.outputs q\n.latch a q re clk 0\n.end\n", 4, "latch"),
    (".model m\n.inputs a\n.outputs q\n.mlatch d a q 0\n.end\n", 4, "mlatch"),
    (".model m\n.inputs a b\n.outputs q\n.gate and2 A=a B=b O=q\n.end\n", 4, "gate"),
    (".model m\n.inputs a\n.outputs q\n.frobnicate\n.end\n", 4, "unknown directive '.frobnicate'"),
    (".model m\n.inputs a b\n.outputs q\n.names a b q\n111 1\n.end\n", 5, "3 input columns but 'q' has 2 fanins"),
    (".model m\n.inputs a b\n.outputs q\n.names a b q\n11 1\n00 0\n.end\n", 6, "mixes on-set"),
    (".model m\n.inputs a b\n.outputs q\n.names a b q\n1x 1\n.end\n", 5, "contains 'x'"),
    (".model m\n.inputs a b\n.outputs q\n.names a b q\n11 2\n.end\n", 5, "must be 0 or 1"),
    (".model m\n.inputs a b\n.outputs q\n.names a q\n1 1\n.names b q\n1 1\n.end\n", 6, "driven twice"),
    (".model m\n.inputs a b\n.outputs q\n.names a b\n1 1\n.names a q\n1 1\n.end\n", 4, "primary input"),
    (".model m\n.inputs a\n.outputs q\n.subckt nosuch x=a y=q\n.end\n", 4, "unknown model 'nosuch'"),
    (".model m\n.inputs a\n.outputs q\n.subckt r x=a y=q\n.end\n.model r\n.inputs x\n.outputs y\n"
     ".subckt m a=x q=y\n.end\n", 9, "recursive .subckt: m -> r -> m"),
    (".model m\n.inputs a\n.outputs q\n.subckt r x=a zz=q\n.end\n.model r\n.inputs x\n.outputs y\n"
     ".names x y\n1 1\n.end\n", 4, "has no port 'zz'"),
    (".model m\n.inputs a\n.outputs q\n.subckt r x\n.end\n", 4, "not formal=actual"),
    (".model m\n.inputs a\n.outputs q\n11 1\n.end\n", 4, "outside a .names block"),
    (".model m\n.inputs a\n.outputs q\n.names a q\n1 1\n.exdc\n.end\n", 6, "exdc"),
    (".model m\n.inputs a\n.outputs q\n.names a q\n1 1\n.end\n.names a q\n1 1\n", 7, "after .end"),
    (".model m\n.inputs a a\n.outputs q\n.names a q\n1 1\n.end\n", 2, "listed twice"),
    (".model m\n.inputs a\n.outputs q r\n.names a q\n1 1\n.end\n", 3, "net 'r' is used but never driven"),
    (".model m\n.inputs a\n.outputs q\n.subckt s o=a\n.names a q\n1 1\n.end\n.model s\n.outputs o\n"
     ".names o\n.end\n", 4, "output 'o' drives 'a', a primary input"),
    (".model m\n.inputs a\n.outputs q\n.names a q\n1 1\n.end\n.model m\n.end\n", 7, "defined twice"),
]


@pytest.mark.parametrize("text, line, message", BAD, ids=[b[2] for b in BAD])
def test_bad_blif_is_refused_naming_file_and_line(text, line, message):
    with pytest.raises(AxnetError) as info:
        parse_blif(text, source="bad.blif")
    assert str(info.value).startswith(f"bad.blif:{line}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cycle_is_refused_naming_the_nets():
    text = ".model m\n.inputs a\n.outputs q\n.names a r q\n11 1\n.names q r\n1 1\n.end\n"
    with pytest.raises(AxnetError, match=r"cycle through nets .*(q -> r|r -> q)"):
        parse_blif(text, source="c.blif")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AxnetError, match="no such file"):
        read_blif(tmp_path / "absent.blif")
    (tmp_path / "empty.blif").write_text("\n  \n")
    with pytest.raises(AxnetError, match="empty.blif: empty file"):
        read_blif(tmp_path / "empty.blif")
    (tmp_path / "comments.blif").write_text("# nothing here\n")
    with pytest.raises(AxnetError, match="empty BLIF file"):
        read_blif(tmp_path / "comments.blif")


# -- writing --------------------------------------------------------------------------------------------------------

@st.composite
def random_netlists(draw):
    """Random acyclic netlists with constants, off-set covers, don't cares and outputs that are inputs."""
    n_inputs = draw(st.integers(0, 5))
    inputs = [f"i[{k}]" for k in range(n_inputs)]
    nets = list(inputs)
    nodes = {}
    for k in range(draw(st.integers(1, 8))):
        fanins = draw(st.lists(st.sampled_from(nets), max_size=3)) if nets else []
        width = len(fanins)
        cube = st.text(alphabet="01-", min_size=width, max_size=width)
        cubes = tuple(draw(st.lists(cube, max_size=4)))
        if width == 0:
            cubes = cubes[:1]
        name = f"$n{k}_x" if k % 2 else f"n{k}"
        nodes[name] = Node(name, tuple(fanins), cubes, draw(st.integers(0, 1)))
        nets.append(name)
    outputs = draw(st.lists(st.sampled_from(nets), min_size=1, max_size=4, unique=True))
    return Netlist("rand", inputs, outputs, nodes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(netlist=random_netlists())
def test_write_then_read_gives_the_same_function(tmp_path, netlist):
    path = tmp_path / "r.blif"
    write_blif(netlist, path)
    again = read_blif(path)
    assert (again.inputs, again.outputs) == (netlist.inputs, netlist.outputs)
    for p in range(2 ** len(netlist.inputs)):
        assert again.evaluate_int(p) == netlist.evaluate_int(p)


def test_names_blif_cannot_carry_are_refused_and_nothing_is_written(tmp_path):
    netlist = Netlist("m", ["a b"], ["y"], {"y": Node("y", ("a b",), ("1",), 1)})
    with pytest.raises(AxnetError, match="'a b' cannot be written to BLIF"):
        write_blif(netlist, tmp_path / "x.blif")
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_an_existing_file_when_the_netlist_is_bad(tmp_path):
    path = tmp_path / "keep.blif"
    path.write_text("old\n")
    broken = Netlist("m", ["a"], ["y"], {"y": Node("y", ("ghost",), ("1",), 1)})
    with pytest.raises(AxnetError, match="ghost"):
        write_blif(broken, path)
    assert path.read_text() == "old\n"
