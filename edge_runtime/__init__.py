"""Tandem's edge runtime: runs signed bundles on the device behind one Engine interface.

It owns the types every engine speaks (a generation request and a stream of token events) and imports no
other Tandem package. Installs with the ``edge`` extra only: importing it never loads torch or transformers.
"""
