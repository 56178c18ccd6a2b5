"""The front door a replica and the gateway share: everything between a caller's connection and the
servicer that does the work.

    config.py       FrontDoorConfig: the [server], [limits], [tls] and [[tenants]] tables, checked once
    listener.py     Listener: the grpc.aio server with the auth interceptor (``cloud_service.auth``), bind with
                    TLS / mutual TLS, health, reflection, ModelDistribution, readiness, drain and stop
    admission.py    Admission: the checks every Generate passes (draining, tenant and model permission, size,
                    request id, quota from ``cloud_service.quota``) and the calls in flight
    access_log.py   CallRecord and AccessLog: one log line and one metrics record per finished call

Importing this package imports none of its modules.
"""

__all__: list[str] = []
