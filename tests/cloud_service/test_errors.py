"""One error root for the cloud tier: every error cloud_service raises on purpose is a CloudServiceError, and
the tree in ``cloud_service.errors``'s docstring names every one of them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import cloud_service
from cloud_service import errors
from cloud_service.errors import CloudError, CloudServiceError, ConfigError, RoutingError


def _error_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(cloud_service.__path__, "cloud_service."):
        if ".engines." in info.name or info.name.startswith("cloud_service.wire"):
            continue  # engines raise the edge runtime's errors; wire is generated code
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name
                    and not name.startswith("_")):
                found[name] = value
    return found


def test_every_public_error_has_the_one_root_and_is_in_the_drawn_tree():
    classes = _error_classes()
    assert {"CloudError", "ConfigError", "DistributionError", "NoReplicaError", "QueueFullError"} <= set(classes)
    assert [name for name, kind in classes.items() if not issubclass(kind, CloudServiceError)] == []
    assert [name for name in classes if name not in (errors.__doc__ or "")] == []


def test_the_branches_keep_their_callers_contracts():
    from cloud_service.config import ConfigError as ConfigErrorOfConfig
    from cloud_service.distribution import DistributionError, UnknownBundleError
    from cloud_service.gateway.queueing import QueueFullError
    from cloud_service.gateway.routing import NoReplicaError

    assert ConfigErrorOfConfig is ConfigError and issubclass(ConfigError, ValueError)
    assert issubclass(UnknownBundleError, LookupError) and issubclass(DistributionError, CloudServiceError)
    assert issubclass(NoReplicaError, RoutingError) and issubclass(QueueFullError, RoutingError)
    assert not issubclass(DistributionError, CloudError) and not issubclass(ConfigError, CloudError)
