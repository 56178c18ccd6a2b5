"""Engines a replica serves, each implementing ``edge_runtime.Engine``: the CPU batching engine (the
embedded default), vLLM on GPUs (the ``gpu`` extra), and a load simulator for routing experiments only."""

__all__: list[str] = []  # one module per engine: cpu, vllm, simulator
