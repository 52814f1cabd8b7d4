"""Writing output files for lutgen, dnn and the CLI; the implementation lives in `circuits.files` (leftmost package)."""
from circuits.files import atomic_write, check_output_dir, remove_stale_temps, reporting_write_errors

__all__ = ["atomic_write", "check_output_dir", "remove_stale_temps", "reporting_write_errors"]
