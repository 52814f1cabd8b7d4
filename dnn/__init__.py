"""PyTorch layers that run on exact or approximate arithmetic: AdderNet and approximate-multiplier layers."""
