"""MongoDB TLS against a real server: the local runner's FerretDB with a TLS listener (and one
requiring client certificates) serves `make_client` with the TLS options in MONGODB_URI, and
refuses a client that does not trust its CA or, with mutual TLS, one without a certificate."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from kefu_local import ferretdb, paths
from kefu_local.process import InfraError, port_open, stop, tail
from kefu_shared.mongo import Document, make_client
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError
from tls_testkit import Pki, make_pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# A profile and ports of their own (no other profile uses 2729x), below the ephemeral range.
PROFILE = "mongo-tls"
SERVER_TLS_PORTS = (27292, 27293)  # plain listener (the runner's readiness check), TLS
MUTUAL_TLS_PORTS = (27294, 27295)
START_TIMEOUT_SECONDS = 30.0
REFUSAL_TIMEOUT_MS = 2000


def tls_uri(port: int, ca_file: Path, client_pem: Path | None = None) -> str:
    """MONGODB_URI as docs/security.md tells operators to write it."""
    uri = f"mongodb://127.0.0.1:{port}/?tls=true&tlsCAFile={quote(str(ca_file))}"
    if client_pem is not None:
        uri += f"&tlsCertificateKeyFile={quote(str(client_pem))}"
    return uri


@dataclass(frozen=True)
class TlsServers:
    pki: Pki
    server_tls_port: int  # TLS only: clients need to trust the CA
    mutual_tls_port: int  # clients also present a certificate signed by the CA
    mutual_tls_log: Path


async def _answers(uri: str) -> bool:
    client = make_client(uri, app_name="tlscheck", timeout_ms=1000)
    try:
        await client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        await client.close()


def _node(name: str, ports: tuple[int, int], pki: Pki, *, mutual: bool) -> ferretdb.FerretDBNode:
    tls = ferretdb.FerretDBTLS(
        port=ports[1],
        cert_file=pki.server_cert_file,
        key_file=pki.server_key_file,
        ca_file=pki.ca_file if mutual else None,
    )
    return ferretdb.FerretDBNode(paths.default_state_dir(PROFILE) / name, port=ports[0], tls=tls)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki(paths.default_state_dir(PROFILE) / "pki")


@pytest.fixture(scope="module")
async def servers(pki: Pki) -> AsyncIterator[TlsServers]:
    """Two FerretDBs on SQLite (TLS sits in the listener, whatever the backend stores on)."""
    server_tls = _node("server-tls", SERVER_TLS_PORTS, pki, mutual=False)
    mutual_tls = _node("mutual-tls", MUTUAL_TLS_PORTS, pki, mutual=True)
    binary = ferretdb.ensure_binary()
    pids: list[int] = []
    try:
        for node in (server_tls, mutual_tls):
            leftover = node.running_pid()
            if leftover is not None:  # an interrupted earlier run
                stop([leftover])
            shutil.rmtree(node.data_dir, ignore_errors=True)
            node.log_file.unlink(missing_ok=True)  # the refusal test reads it
        for port in (*SERVER_TLS_PORTS, *MUTUAL_TLS_PORTS):
            if port_open("127.0.0.1", port, timeout=0.3):
                raise InfraError(f"port {port} is taken: the TLS test FerretDB needs it")
        pids = [server_tls.start(binary), mutual_tls.start(binary)]
        ready = {
            tls_uri(SERVER_TLS_PORTS[1], pki.ca_file): server_tls,
            tls_uri(MUTUAL_TLS_PORTS[1], pki.ca_file, pki.client_pem_file): mutual_tls,
        }
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for uri, node in ready.items():
            while not await _answers(uri):
                if node.running_pid() is None or time.monotonic() > deadline:
                    raise InfraError(f"FerretDB did not answer over TLS:\n{tail(node.log_file)}")
                await asyncio.sleep(0.2)
        yield TlsServers(pki, SERVER_TLS_PORTS[1], MUTUAL_TLS_PORTS[1], mutual_tls.log_file)
    finally:
        stop(pids)


async def _ping_and_write(client: AsyncMongoClient[Document]) -> None:
    assert (await client.admin.command("ping"))["ok"] == 1.0
    db = client[f"t_tls_{uuid.uuid4().hex[:8]}"]
    try:
        await db["orders"].insert_one({"_id": "o-1", "state": "paid"})
        assert await db["orders"].find_one({"_id": "o-1"}) == {"_id": "o-1", "state": "paid"}
    finally:
        await client.drop_database(db.name)


async def _refusal(uri: str) -> str:
    """The error a client gets, within the server-selection timeout (not a hang)."""
    client = make_client(uri, app_name="tlscheck", timeout_ms=REFUSAL_TIMEOUT_MS)
    started = time.monotonic()
    try:
        with pytest.raises(ServerSelectionTimeoutError) as refused:
            await client.admin.command("ping")
    finally:
        await client.close()
    assert time.monotonic() - started < REFUSAL_TIMEOUT_MS / 1000 + 2
    return str(refused.value)


async def test_make_client_pings_and_writes_over_tls(servers: TlsServers) -> None:
    client = make_client(tls_uri(servers.server_tls_port, servers.pki.ca_file), app_name="t")
    try:
        await _ping_and_write(client)
    finally:
        await client.close()


async def test_make_client_pings_and_writes_over_mutual_tls(servers: TlsServers) -> None:
    uri = tls_uri(servers.mutual_tls_port, servers.pki.ca_file, servers.pki.client_pem_file)
    client = make_client(uri, app_name="t")
    try:
        await _ping_and_write(client)
    finally:
        await client.close()


async def test_a_client_that_does_not_trust_the_servers_ca_is_refused(
    servers: TlsServers,
) -> None:
    error = await _refusal(tls_uri(servers.server_tls_port, servers.pki.untrusted_ca_file))
    assert "CERTIFICATE_VERIFY_FAILED" in error, error


async def test_mutual_tls_refuses_a_client_without_a_certificate(servers: TlsServers) -> None:
    await _refusal(tls_uri(servers.mutual_tls_port, servers.pki.ca_file))
    # Under TLS 1.3 the server checks the client's certificate after the handshake, so the
    # client only sees the connection closed; the server's log names the reason.
    assert "client didn't provide a certificate" in servers.mutual_tls_log.read_text()
