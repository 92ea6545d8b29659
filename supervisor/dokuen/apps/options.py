"""The DOKUEN_* app config vars that change how the platform treats an app's processes."""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from dokuen.errors import SettingsError
from dokuen.isolate.limits import parse_memory_limit, parse_process_limit
from dokuen.proxy.nginx import check_body_size
from dokuen.supervise.health import HealthCheck, check_path
from dokuen.supervise.restart import RestartPolicy, parse_restart_limit

DEFAULT_BOOT_TIMEOUT = 60.0


@dataclass(frozen=True)
class AppOptions:
    stop_timeout: float
    policy: RestartPolicy
    health: HealthCheck
    memory_limit: int | None = None  # bytes, for the app's cgroup
    process_limit: int | None = None  # processes and threads, for the app's cgroup


def app_options(config: Mapping[str, str], default_stop_timeout: float) -> AppOptions:
    """Read the options from an app's config.

    ``DOKUEN_STOP_TIMEOUT``: seconds between SIGTERM and SIGKILL.
    ``DOKUEN_RESTART_LIMIT``: fast failures in a row before a process is crashed, or
    ``forever``.
    ``DOKUEN_HEALTHCHECK_PATH``, ``DOKUEN_BOOT_TIMEOUT``: how a new web process shows it
    serves (an HTTP GET answering 2xx/3xx, else a TCP connect) and how long it has.
    ``DOKUEN_MEMORY_LIMIT`` (``512M``), ``DOKUEN_PROCESS_LIMIT`` (``256``): the limits of
    the app's cgroup, all its processes together.

    Raises:
        SettingsError: naming the variable and what it accepts.
    """
    stop_timeout = _seconds(config, "DOKUEN_STOP_TIMEOUT", default_stop_timeout, zero_ok=True)
    policy = RestartPolicy()
    if "DOKUEN_RESTART_LIMIT" in config:
        policy = RestartPolicy(limit=parse_restart_limit(config["DOKUEN_RESTART_LIMIT"]))
    boot_timeout = _seconds(config, "DOKUEN_BOOT_TIMEOUT", DEFAULT_BOOT_TIMEOUT, zero_ok=False)
    if "DOKUEN_CLIENT_MAX_BODY_SIZE" in config:
        check_body_size(config["DOKUEN_CLIENT_MAX_BODY_SIZE"])
    path = config.get("DOKUEN_HEALTHCHECK_PATH")
    health = HealthCheck(check_path(path) if path else None, boot_timeout)
    memory = config.get("DOKUEN_MEMORY_LIMIT")
    processes = config.get("DOKUEN_PROCESS_LIMIT")
    return AppOptions(
        stop_timeout,
        policy,
        health,
        parse_memory_limit(memory) if memory else None,
        parse_process_limit(processes) if processes else None,
    )


def _seconds(config: Mapping[str, str], key: str, default: float, *, zero_ok: bool) -> float:
    """A number of seconds up to an hour (from 0 when ``zero_ok``, else above it)."""
    if key not in config:
        return default
    text = config[key]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero_ok else value > 0) or not value <= 3600:
        raise SettingsError(f"{key}={text!r} is not a number of seconds from 0 to 3600")
    return value
