"""Read a circuit file of either kind, chosen by its extension: `.blif` (flattened, checked) or `.pla`."""
from __future__ import annotations

from pathlib import Path

from circuits.errors import AxnetError

CIRCUIT_SUFFIXES = (".blif", ".pla")


def is_circuit_path(path):
    """True when `path` names a circuit file by its extension (.blif or .pla, any case)."""
    return Path(path).suffix.lower() in CIRCUIT_SUFFIXES


def read_circuit(path, top=None, undriven="error"):
    """A Netlist from a .blif or .pla file. `top` and `undriven` are the BLIF reader's options (a PLA has neither).

    Reader warnings (dead logic dropped, nets tied to 0) are issued with `warnings.warn`; the CLI prints them.

    Raises
    ------
    AxnetError
        for another extension, `top` given for a PLA, or anything the readers refuse (a missing or unreadable file included).
    """
    p = Path(path)
    if not is_circuit_path(p):
        raise AxnetError(f"expected a circuit file ending in {' or '.join(CIRCUIT_SUFFIXES)}", path=str(path))
    if p.suffix.lower() == ".blif":
        from circuits.blif import read_blif
        return read_blif(str(path), top=top, undriven=undriven)
    if top is not None:
        raise AxnetError("--top applies to BLIF hierarchies, not to a .pla file", path=str(path))
    from circuits.pla import read_pla
    return read_pla(str(path))
