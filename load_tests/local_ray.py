"""How a fresh local Ray is started here: the way `make serve` starts it (the Makefile exports the same names).

- `RAY_AUTH_MODE=token`: every Ray endpoint (GCS, raylet, workers, dashboard, job API, agents, Serve's
  replica-to-replica gRPC) wants the cluster's token. A local `ray.init` writes one to ~/.ray/auth_token
  if there is none; `ray get-auth-token` prints it; the `serve`/`ray` CLIs send it when this is set.
- `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`: Ray's single-machine mode (its default on macOS and Windows), which
  gives the node the address 127.0.0.1, so the GCS, raylet, workers, agents and metrics ports listen on
  loopback only. Only for a node that starts its own cluster; a driver joining a remote cluster must not set it.

A value already in the environment wins, as in the Makefile (`?=`). No Ray import here: the names must be in
the environment before Ray reads them (tests/conftest.py sets them before anything imports Ray).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import MutableMapping

AUTH_ENV = {"RAY_AUTH_MODE": "token"}
"""Wanted by every process that talks to the cluster (drivers, the serve CLI) as much as by the cluster."""

LOCAL_NODE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Only where a new local cluster is started: its node binds 127.0.0.1."""

LOCAL_RAY_ENV = AUTH_ENV | LOCAL_NODE_ENV


def apply_local_ray_env(environ: MutableMapping[str, str] | None = None, *, local_node: bool = True) -> MutableMapping[str, str]:
    """Sets the defaults above in `environ` (os.environ by default) unless already set; returns it."""
    environ = os.environ if environ is None else environ
    for name, value in (LOCAL_RAY_ENV if local_node else AUTH_ENV).items():
        environ.setdefault(name, value)
    return environ


FREE_PORTS = range(20000, 30000)
"""Where `free_port` looks: above Ray's worker ports (10002-19999), below Serve's direct-ingress replica ports
(30000-31000, when on) and the kernel's ephemeral range (32768-60999 on Linux), from which Ray's own processes
take their gRPC and agent ports while a test starts. A port the kernel handed out (bind to 0) was free when
asked and could be another Ray process's by the time the proxy bound it (a CI run failed so: "Failed to bind
to address '0.0.0.0:35595'")."""


def free_port() -> int:
    """A TCP port nothing listens on, on any address (the proxy binds 0.0.0.0), outside the ranges Ray draws from."""
    for port in random.sample(FREE_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")
