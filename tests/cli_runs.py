"""What the CLI tests share: the `axnet` command called in-process with any arguments, and the tiny training run
(48 digits, batch 16, one epoch) the eval, sweep, retrain and run-directory tests start from."""
import json

from click.testing import CliRunner

from cli import main

TINY_TRAIN = ["--model", "mnist-addernet", "--limit", "48", "--limit-test", "32", "--batch-size", "16",
              "--no-augment"]


def invoke(*args):
    """`axnet ARGS` (each argument made a string); an exception the CLI does not turn into an error line propagates."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train_tiny(out, *options):
    """A finished tiny run in `out` (later `options` override TINY_TRAIN's); returns its summary."""
    r = invoke("train", *TINY_TRAIN, "--epochs", 1, *options, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)
