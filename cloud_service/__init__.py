"""Tandem's cloud tier, for backend teams: gRPC replicas over vLLM (GPU) or a CPU engine, and the gateway.

The wire contract lives in ``protos/`` at the top of the repository; its generated Python code is in
``cloud_service.wire`` (written by ``make protos``, never by hand).
"""

__all__: list[str] = []  # its modules are the surface: client (CloudClient), server (ReplicaServer), gateway
