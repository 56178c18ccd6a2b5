"""Engines a replica serves, each implementing ``edge_runtime.Engine``: the CPU batching engine (the
embedded default) and vLLM on GPUs (the ``gpu`` extra)."""
