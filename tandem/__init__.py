"""The Tandem application: the ``tandem`` command line, the end-to-end demo and the in-process fleet.

This is the composition root, the one package that sees every other: ``cli`` mounts each package's
commands, ``demo`` plays the hybrid scenarios, ``fleet`` runs replicas and a gateway in one process for the
demo, the tests and the benchmarks. Nothing outside ``tandem`` imports it (``tests/test_architecture.py``
pins the import graph).
"""

from importlib.metadata import version as _version

__version__ = _version("tandem-inference")

__all__ = ["__version__"]
