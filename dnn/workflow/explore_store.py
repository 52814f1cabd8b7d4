"""`results.sqlite`, the record of an `axnet explore` run: one row per design and role, one per per-layer assignment.

Every result is written in its own transaction the moment it arrives, so a run killed at any moment leaves a
consistent database; `--resume` reads it to skip what is done, and the primary keys make recording a design twice
impossible. The `meta` table holds what the rows depend on (checkpoint, data, limits): resuming with other settings
is refused rather than mixing two runs in one table.
"""
from __future__ import annotations

import json
import os
import sqlite3

from circuits.errors import AxnetError

DB_NAME = "results.sqlite"
METRIC_COLUMNS = ("ep_percent", "mae", "mae_percent", "wce", "wce_percent", "mse", "bias", "mre_percent",
                  "wcre_percent")
COST_COLUMNS = ("gates", "inverters", "area_nand2", "depth", "abc_area")
DESIGN_COLUMNS = (("design", "TEXT NOT NULL"), ("role", "TEXT NOT NULL"), ("position", "INTEGER"),
                  ("circuit", "TEXT"), ("names", "TEXT"), ("sources", "TEXT"), ("reference", "TEXT"),
                  ("operands", "TEXT"), ("signed", "INTEGER"), ("implementation", "TEXT")) \
    + tuple((c, "REAL") for c in METRIC_COLUMNS) \
    + (("gates", "INTEGER"), ("inverters", "INTEGER"), ("area_nand2", "REAL"), ("depth", "INTEGER"),
       ("abc_area", "REAL"), ("accuracy", "REAL"), ("images", "INTEGER"), ("seconds", "REAL"),
       ("retrained_accuracy", "REAL"), ("retrain_epochs", "INTEGER"), ("retrain_grad", "TEXT"), ("note", "TEXT"))
ASSIGN_COLUMNS = (("assignment", "TEXT NOT NULL"), ("role", "TEXT NOT NULL"), ("kind", "TEXT"), ("layers", "TEXT"),
                  ("designs", "TEXT"), ("circuits", "TEXT"), ("cost", "REAL"), ("predicted", "REAL"),
                  ("accuracy", "REAL"), ("images", "INTEGER"), ("seconds", "REAL"), ("note", "TEXT"))
DESIGN_NAMES = tuple(name for name, _ in DESIGN_COLUMNS)
ASSIGN_NAMES = tuple(name for name, _ in ASSIGN_COLUMNS)


def db_path(run_dir):
    return os.path.join(run_dir, DB_NAME)


def connect(run_dir):
    """Open (creating if needed) the run's database with its three tables."""
    try:
        conn = sqlite3.connect(db_path(run_dir), timeout=30)
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            cols = ", ".join(f"{n} {t}" for n, t in DESIGN_COLUMNS)
            conn.execute(f"CREATE TABLE IF NOT EXISTS designs ({cols}, PRIMARY KEY (design, role))")
            cols = ", ".join(f"{n} {t}" for n, t in ASSIGN_COLUMNS)
            conn.execute(f"CREATE TABLE IF NOT EXISTS assignments ({cols}, PRIMARY KEY (assignment, role))")
    except sqlite3.DatabaseError as e:
        raise AxnetError(f"cannot use the results database ({e})", path=db_path(run_dir)) from None
    return conn


def check_meta(conn, meta, path):
    """Record the run's settings, or on resume check they are the ones the rows were made with."""
    stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    wanted = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
    if not stored:
        with conn:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(wanted.items()))
        return
    for key, value in wanted.items():
        if key in stored and stored[key] != value:
            raise AxnetError(f"--resume: this run was made with {key} = {stored[key]}, not {value}; "
                             "use another --out for other settings", path=path)


def done_designs(conn):
    """{(design, role)} already recorded."""
    return set(conn.execute("SELECT design, role FROM designs").fetchall())


def retrained_designs(conn):
    """{(design, role)} whose retrained accuracy is recorded."""
    return set(conn.execute("SELECT design, role FROM designs WHERE retrained_accuracy IS NOT NULL").fetchall())


def done_assignments(conn):
    return set(conn.execute("SELECT assignment, role FROM assignments").fetchall())


def insert_design(conn, row):
    """Record one design's row (its own transaction). A second row for the same design and role is an error."""
    names = [n for n in DESIGN_NAMES if n in row]
    with conn:
        conn.execute(f"INSERT INTO designs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                     [plain(row[n]) for n in names])


def record_retrained(conn, design, role, accuracy, epochs, grad):
    with conn:
        conn.execute("UPDATE designs SET retrained_accuracy = ?, retrain_epochs = ?, retrain_grad = ? "
                     "WHERE design = ? AND role = ?", (accuracy, epochs, grad, design, role))


def insert_assignment(conn, row):
    names = [n for n in ASSIGN_NAMES if n in row]
    with conn:
        conn.execute(f"INSERT INTO assignments ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                     [plain(row[n]) for n in names])


def plain(value):
    """Lists and dicts as JSON text, numpy scalars as Python numbers."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value.item() if hasattr(value, "item") else value


def design_rows(conn, role=None):
    """Every design row as a dict, in the order the designs were given."""
    return _rows(conn, "designs", DESIGN_NAMES, "position, design", ("names", "sources"), role)


def assignment_rows(conn, role=None):
    """Every assignment row as a dict (its lists decoded), by kind."""
    return _rows(conn, "assignments", ASSIGN_NAMES, "kind, assignment", ("layers", "designs", "circuits"), role)


def _rows(conn, table, names, order, json_keys, role):
    """The rows of `table` (of one role, if given) as dicts, the JSON list columns `json_keys` decoded."""
    where, args = (" WHERE role = ?", (role,)) if role else ("", ())
    rows = [dict(zip(names, r)) for r in conn.execute(f"SELECT {', '.join(names)} FROM {table}{where} ORDER BY {order}",
                                                      args)]
    for r in rows:
        for key in json_keys:
            r[key] = json.loads(r[key]) if r[key] else []
    return rows
