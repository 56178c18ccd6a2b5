"""Measurements of Tandem end to end, on real engines (`tandem eval ...`).

    tandem eval routing [--size full|smoke] [--backend gguf|onnx] [--json]

``routing`` (``evaluation.routing``): how well each routing policy trades cloud calls for accuracy on the
synthetic task suite, through the real SDK, a real device bundle and a real cloud tier on loopback that its
caller starts (``tandem`` passes its in-process fleet). It drives ``sdk`` and ``export.tasks``; only
``tandem`` imports it.
"""

__all__: list[str] = []  # its modules are the surface: routing.evaluate.evaluate_routing, cli

