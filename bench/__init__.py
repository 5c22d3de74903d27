"""augbench's top layer: the command line, the harness (recipe -> pretrain -> tasks -> results), matrix
runs and their fan-out.  The ground every layer stands on is :mod:`core`."""

from core import __version__

__all__ = ["__version__"]
