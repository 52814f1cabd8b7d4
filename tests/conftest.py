"""Hypothesis draws the same examples on every run unless HYPOTHESIS_PROFILE=random: a red CI build then means the
code changed, not the draw. Run the random profile now and then to look for new counterexamples."""
import os

from hypothesis import settings

settings.register_profile("fixed", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))
