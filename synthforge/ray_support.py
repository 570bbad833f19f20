"""Joining Ray (the optional extra): one-line error when it is missing; RAY_ADDRESS joins a cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from synthforge.errors import UserError


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'synthforge[ray]'") from None
    return ray


def init_ray(num_cpus: int, num_gpus: float | None = None) -> Any:
    """Ray, connected: the running instance, else the cluster at ``RAY_ADDRESS`` when set, else a local
    instance with ``num_cpus`` CPUs (and ``num_gpus`` GPUs)."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(num_cpus, 1), num_gpus=num_gpus or None, **kwargs)
    return ray
