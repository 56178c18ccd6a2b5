"""OpenAI-compatible HTTP beside gRPC: ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``.

    [server]
    http_port = 8080          # 0: any free port; unset: no HTTP

The HTTP server (``server.HttpFrontDoor``: Starlette on uvicorn, in the gRPC server's event loop) transcodes
each call into the ``tandem.v1.Inference`` call it stands for and makes it on the server's own gRPC port over
loopback, with the caller's ``Authorization`` header as its metadata. So a call over HTTP passes the same
front door as one over gRPC: the same API keys and tenants, quotas, limits, access log and metrics, on a
replica or the gateway (where it is balanced, retried and resumed as any gRPC call). ``requests`` reads the
OpenAI bodies, ``responses`` writes OpenAI's objects and errors, ``app`` holds the routes.
"""

from cloud_service.openai_api.requests import BadRequest

__all__ = ["BadRequest"]
