"""Router calibration: `tandem export calibrate-router` fits a bundle's difficulty router and re-signs it.

Modules: ``fit`` (numpy: the fit, AUROC, the threshold table), ``run`` (answers through the edge runtime,
labels, fit, sealing router.json into the bundle), ``cli`` (the command). The router itself, and the text
features it reads, live in ``edge_runtime.router``: devices run it without the export tool.
"""

__all__: list[str] = []  # its modules are the surface (see above)
