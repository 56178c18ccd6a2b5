"""Tandem's SDK, for app developers: one client that answers each request on the device or in the cloud.

Install with the ``edge`` extra; importing ``sdk`` never loads torch or transformers.
"""

from importlib.metadata import version as _version

__version__ = _version("tandem-inference")

__all__ = ["__version__"]
