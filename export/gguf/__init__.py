"""The GGUF path of the export tool: our own converter (gguf library writer and tensor name maps), llama.cpp's
quantizer in-process, and scoring with llama.cpp for the numerical check and the quality gate."""

__all__: list[str] = []  # its modules are the surface: pipeline.build_gguf_bundle, cli
