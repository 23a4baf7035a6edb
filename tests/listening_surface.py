"""What a process listens on, and what each socket answers an outsider without Ray's token (HTTP/1.1 first, then
one harmless gRPC method per Ray service): the probes tests/test_make_serve.py runs against `make serve`'s Ray."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil

GRPC_PROBES = [
    # One harmless method per Ray gRPC service, read-only where there is one; the first a listener implements
    # tells: UNAUTHENTICATED is a refusal, any other answer a call served without credentials.
    "/ray.rpc.NodeInfoGcsService/GetClusterId",  # GCS
    "/ray.rpc.NodeManagerService/GetSystemConfig",  # raylet
    "/ray.rpc.CoreWorkerService/NumPendingTasks",  # every worker and driver
    "/ray.rpc.ReporterService/HealthCheck",  # dashboard agent
    "/ray.rpc.events.EventAggregatorService/AddEvents",  # event aggregator (an empty request adds nothing)
    "/ray.rpc.ObjectManagerService/Pull",  # raylet's object manager
    "/ray.serve.ASGIService/HandleRequest",  # Serve replicas (their replica-to-replica gRPC server)
]


@dataclass
class Listener:
    address: str
    port: int
    pid: int
    process: str
    verdict: str = ""
    acceptable: bool = True

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address.split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    @property
    def connect_host(self) -> str:
        ip = ipaddress.ip_address(self.address.split("%")[0])
        if ip.is_unspecified:
            return "127.0.0.1"  # a wildcard socket answers on every interface, loopback too
        if ip.version == 6 and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"[{ip}]" if ip.version == 6 else str(ip)

    def row(self) -> str:
        where = f"{self.address}:{self.port}"
        return f"{where:<24} {self.process + f' ({self.pid})':<52} {self.verdict}"


def process_name(process: psutil.Process) -> str:
    command = process.cmdline()
    if not command:
        return process.name()
    if command[0].startswith("ray::"):  # a worker's title, with the method it runs now after a dot
        return command[0].split()[0].split(".")[0]
    if "python" in Path(command[0]).name and len(command) > 1:
        script = next((c for c in command[1:] if c.endswith(".py")), None)
        if script:
            return f"python {Path(script).parent.name}/{Path(script).name}"
        if "-m" in command[:-1]:
            return f"python -m {command[command.index('-m') + 1]}"
        if not command[1].startswith("-"):
            return Path(command[1]).name  # a console script: `serve` (the driver of `serve run`)
    return Path(command[0]).name


def listeners_of(processes: dict[int, psutil.Process]) -> list[Listener]:
    found = {}
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in processes:
            key = (connection.laddr.ip, connection.laddr.port, connection.pid)
            found[key] = Listener(*key, process_name(processes[connection.pid]))
    return sorted(found.values(), key=lambda listener: (listener.process, listener.port))


def grpc_status(host: str, port: int, method: str) -> grpc.StatusCode:
    """The status of one call with an empty request and no credentials."""
    channel = grpc.insecure_channel(f"{host}:{port}")
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(b"", timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()


def probe(listener: Listener, token: str | None) -> None:
    """Asks a listener, as an outsider without the token would, for something; says what it answered."""
    host, port = listener.connect_host, listener.port
    try:  # HTTP/1.1 first: the dashboard, its job API, the agents, Prometheus exporters
        without = httpx.get(f"http://{host}:{port}/api/jobs/", timeout=5)
    except httpx.HTTPError:
        without = None  # not HTTP/1.1: a gRPC server
    if without is not None:
        if without.status_code in (401, 403):
            with_token = httpx.get(f"http://{host}:{port}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=5)
            listener.verdict = f"refuses: HTTP {without.status_code} without the token, {with_token.status_code} with it"
            listener.acceptable = with_token.status_code not in (401, 403)  # the token is what it asks for
        else:
            listener.verdict = f"ANSWERS without credentials: HTTP {without.status_code} {without.text[:40]!r}"
            listener.acceptable = False
        return
    for method in GRPC_PROBES:
        code = grpc_status(host, port, method)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            continue
        if code == grpc.StatusCode.UNAUTHENTICATED:
            listener.verdict = f"refuses: gRPC UNAUTHENTICATED without the token ({method.rsplit('/', 2)[1]})"
        else:
            listener.verdict = f"ANSWERS without credentials: gRPC {method} -> {code.name}"
            listener.acceptable = False
        return
    listener.verdict = "UNKNOWN service: cannot tell whether it refuses"
    listener.acceptable = False
