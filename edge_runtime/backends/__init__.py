"""Decoders over the runtime libraries, one module per bundle format; each imports its library lazily."""

__all__: list[str] = []  # the decoders are reached through edge_runtime.load_bundle, never imported directly
