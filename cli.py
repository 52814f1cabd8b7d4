"""The `axnet` command. It only composes circuits -> simulator -> lutgen -> dnn; the work lives in those packages."""
import sys

import click

from circuits.errors import AxnetError

__version__ = "0.1.0"


class AxnetGroup(click.Group):
    """Turns every AxnetError into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AxnetError as e:
            click.echo(f"axnet: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=AxnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="axnet")
def main():
    """axnet: approximate adders and multipliers, from netlists to lookup tables to AdderNet layers."""


# ---- circuit toolchain commands (issue 2) ----------------------------------------------------------------------------


# ---- training workflow commands (issue 4) ----------------------------------------------------------------------------


if __name__ == "__main__":
    main()
