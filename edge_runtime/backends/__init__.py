"""Decoders over the runtime libraries, one module per bundle format; each imports its library lazily."""
