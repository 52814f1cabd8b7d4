"""Atomic file writing for lutgen and the CLI; the implementation lives in `circuits.files` (leftmost package)."""
from circuits.files import atomic_write

__all__ = ["atomic_write"]
