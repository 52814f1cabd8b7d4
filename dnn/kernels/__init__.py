"""Compute kernels of the dnn layers: the torch references (any device) and compiled CPU versions.

`adder_ops` (AdderNet layers) and `mult_ops` (multiplier layers) hold the torch kernels, each with its dispatcher;
`native` wraps the C kernels in `csrc/`, which `build` compiles on first use.
"""
