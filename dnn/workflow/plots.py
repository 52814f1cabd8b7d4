"""PNG plots of training curves and approximate-bit sweeps (matplotlib, Agg backend, atomic writes)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lutgen.files import atomic_write  # noqa: E402


def save_figure(fig, path):
    """Write a figure as PNG atomically and free it."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history, path, title):
    """Loss and accuracy against epoch, train and test, side by side."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["train_loss"], label="train")
    ax_loss.plot(epochs, history["test_loss"], label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.legend()
    ax_acc.plot(epochs, history["train_acc"], label="train")
    ax_acc.plot(epochs, history["test_acc"], label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def plot_sweep(bits, accuracy, float_acc, path, title):
    """Accuracy against the number of approximate low bits, with the float accuracy as a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(bits, accuracy, marker="o", label="approximate adder")
    if float_acc is not None:
        ax.axhline(float_acc, linestyle="--", color="gray", label=f"float ({float_acc:.2f}%)")
    ax.set_xlabel("approximate low bits k")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path)
