"""The Triton kernels (`dnn.kernels.triton`) against the torch references, under Triton's interpreter on CPU tensors.

The interpreter must be switched on before triton is imported, and that must not leak into the other tests, so the
checks (`tests/triton_checks.py`) run once in a subprocess and each one's result is reported here as its own test.
With a CUDA device the same checks also run compiled on the GPU.
Skipped, with the reason, when triton is not installed (`pip install axnet[gpu]`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import triton_checks
import triton_compile_checks
from circuits.errors import AxnetError
from dnn.kernels import triton as triton_kernels

HERE = Path(__file__).resolve().parent
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install 'axnet[gpu]')")


def interpreter_runs_the_kernels():
    """Triton 3.6's interpreter stops at the kernels' runtime loop bounds (seen on an H200 machine, where the same
    kernels ran compiled); 3.9's runs them all."""
    from importlib.metadata import version
    return tuple(int(part) for part in version("triton").split(".")[:2]) >= (3, 9)


MODES = [pytest.param("interpreter", marks=pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or not interpreter_runs_the_kernels(),
    reason="Triton's interpreter runs these kernels from 3.9 on"))] + (["cuda"] if torch.cuda.is_available() else [])
_RUNS = {}


def run_checks(mode):
    """{check name: None or traceback} from one run of every check in `mode` (once per test session)."""
    if mode not in _RUNS:
        env = dict(os.environ, AXNET_TRITON="force", OMP_NUM_THREADS="1")
        if mode == "interpreter":
            env.update(TRITON_INTERPRET="1", AXNET_CHECK_DEVICE="cpu")
        else:
            env.update(TRITON_INTERPRET="0", AXNET_CHECK_DEVICE="cuda")
        proc = subprocess.run([sys.executable, str(HERE / "triton_checks.py")], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _RUNS[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _RUNS[mode]


@needs_triton
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(triton_checks.CHECKS))
def test_triton_kernel_matches_reference(mode, name):
    failure = run_checks(mode)[name]
    assert failure is None, failure


_COMPILED = {}


def compile_results():
    """{group: {"error", "usage"}} from one run of `tests/triton_compile_checks.py` (sm_90, no GPU needed)."""
    if not _COMPILED:
        env = dict(os.environ, TRITON_INTERPRET="0", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, str(HERE / "triton_compile_checks.py")], env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _COMPILED.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return _COMPILED


@needs_triton
@pytest.mark.parametrize("group", sorted(triton_compile_checks.CHECKS))
def test_triton_kernels_compile_for_the_gpu_without_spills(group):
    """Every kernel compiles to sm_90 machine code (what the interpreter cannot check), with no register spills."""
    result = compile_results()[group]
    assert result["error"] is None, result["error"]
    assert not any(re.search(r"STACK:[1-9]", usage) for usage in result["usage"]), result["usage"]


def test_selection_follows_device_and_mode(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.setenv("AXNET_TRITON", "auto")
    assert not triton_kernels.use(cpu)  # CPU tensors take the compiled C or torch paths unless forced
    monkeypatch.setenv("AXNET_TRITON", "0")
    assert not triton_kernels.use(cpu)
    monkeypatch.setenv("AXNET_TRITON", "sometimes")
    with pytest.raises(AxnetError, match="AXNET_TRITON=sometimes"):
        triton_kernels.use(cpu)


@needs_triton
def test_forcing_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(triton_kernels, "_PROBED", {})
    monkeypatch.setattr(triton_kernels, "run_probe", lambda device: None)  # triton is not imported in this process
    monkeypatch.setenv("AXNET_TRITON", "force")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_kernels.use(torch.zeros(1))
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(AxnetError, match="TRITON_INTERPRET=1"):
        triton_kernels.use(torch.zeros(1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the benchmark would run")
def test_gpu_benchmark_refuses_without_cuda_in_one_line():
    proc = subprocess.run([sys.executable, str(HERE.parent / "benchmarks" / "bench_gpu.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().startswith("bench_gpu: no CUDA device") and len(proc.stderr.strip().splitlines()) == 1


def test_a_failing_probe_falls_back_to_torch_with_one_warning(monkeypatch):
    """An installation whose kernels cannot run (no C compiler for the launcher, an unsupported GPU) must cost one
    warning and the torch path, not an error in every layer."""
    monkeypatch.setattr(triton_kernels, "installed", lambda: True)
    monkeypatch.setattr(triton_kernels, "_PROBED", {})
    monkeypatch.setenv("AXNET_TRITON", "force")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    calls = []

    def broken(device):
        calls.append(device)
        raise RuntimeError("failed to compile the launcher: no C compiler")
    monkeypatch.setattr(triton_kernels, "run_probe", broken)
    with pytest.warns(RuntimeWarning, match="Triton kernels are off on cpu .*no C compiler"):
        assert not triton_kernels.use(torch.zeros(1))
    assert not triton_kernels.use(torch.zeros(2)) and len(calls) == 1  # probed once, remembered
    monkeypatch.setattr(triton_kernels, "_PROBED", {})
    monkeypatch.setattr(triton_kernels, "run_probe", lambda device: None)
    assert triton_kernels.use(torch.zeros(1))
