"""Measurements of Tandem end to end, on real engines (`tandem eval ...`).

    tandem eval routing [--size full|smoke] [--backend gguf|onnx] [--json]

``routing`` (``evaluation.routing``): how well each routing policy trades cloud calls for accuracy on the
synthetic task suite, through the real SDK, a real device bundle and a real cloud tier on loopback. This
package sits above every other one (it drives ``sdk``, ``cloud_service`` and ``export.tasks``); nothing
imports it but the command line.
"""
