"""Private redis-servers for tests: one with a password or TLS, or a Redis Cluster of
three masters, each on free local ports, stopped afterwards."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate that signs the server's
    cert: Path
    key: Path


def tls_files(workdir: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key")
    ca_key, csr, ext = workdir / "ca.key", workdir / "server.csr", workdir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(files.ca), "-days", "1",
         "-subj", "/CN=jobmesh test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out",
         str(files.cert), "-days", "1", "-extfile", str(ext)],
    ):  # fmt: skip
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    return files


def _free_port() -> int:
    """A free port below 55536: a cluster node also listens on its port + 10000 (the bus)."""
    while True:
        port = random.randint(20000, 55000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait(port: int, *cli: str, until: str = "PONG", command: tuple[str, ...] = ("PING",)) -> None:
    deadline = time.monotonic() + 20
    while True:
        answer = subprocess.run(
            ["redis-cli", "-p", str(port), *cli, *command], capture_output=True, text=True, check=False
        ).stdout
        if until in answer:
            return
        assert time.monotonic() < deadline, f"redis-server on {port}: {answer!r}"
        time.sleep(0.1)


@contextmanager
def redis_server(workdir: Path, *args: str, cli: tuple[str, ...] = (), tls: TlsFiles | None = None) -> Iterator[int]:
    """A redis-server on a free port with ``args`` added; ``cli``: what redis-cli needs
    to reach it (a password); ``tls``: the port speaks TLS only, with these files.
    Yields the port."""
    assert shutil.which("redis-server") is not None, "redis-server is not on PATH"
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file",
                  str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]  # fmt: skip
        cli = ("--tls", "--cacert", str(tls.ca), *cli)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", *listen, "--save", "", "--appendonly", "no", "--dir", str(workdir),
         *args],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(port, *cli)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def redis_cluster(workdir: Path, masters: int = 3, password: str = "") -> Iterator[list[int]]:
    """A Redis Cluster of ``masters`` masters (no replicas) on free ports, each asking
    for ``password`` if one is given; yields the ports."""
    ports: list[int] = []
    cli = ("--no-auth-warning", "-a", password) if password else ()
    with _nodes(workdir, masters, ports, password, cli):
        subprocess.run(
            ["redis-cli", *cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas",
             "0", "--cluster-yes"],
            check=True, capture_output=True,
        )  # fmt: skip
        for port in ports:
            _wait(port, *cli, until="cluster_state:ok", command=("CLUSTER", "INFO"))
        yield ports


@contextmanager
def _nodes(workdir: Path, count: int, ports: list[int], password: str, cli: tuple[str, ...]) -> Iterator[None]:
    if count == 0:
        yield
        return
    node = workdir / f"node{count}"
    args = ["--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf")]
    if password:
        args += ["--requirepass", password, "--masterauth", password]
    with redis_server(node, *args, cli=cli) as port:
        ports.append(port)
        with _nodes(workdir, count - 1, ports, password, cli):
            yield
