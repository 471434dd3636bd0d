"""A throw-away certificate authority for the TLS tests: a CA, a server certificate for
127.0.0.1, a client certificate, and a second CA that signed neither (the untrusted one)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    untrusted_ca_file: Path
    server_cert_file: Path
    server_key_file: Path  # PKCS#8, unencrypted
    client_cert_file: Path
    client_key_file: Path
    # Certificate and key in one file, as PyMongo's tlsCertificateKeyFile wants them.
    client_pem_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        # Clients check the host name they dialled against these (Python's default context).
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, server and client certificates (valid for a day) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("kefu test CA")
    _, untrusted_cert = _ca("kefu untrusted CA")
    server_key, server_cert = _leaf("kefu test server", ca_key, ca_cert, server=True)
    client_key, client_cert = _leaf("kefu-test-client", ca_key, ca_cert, server=False)
    pki = Pki(
        ca_file=directory / "ca.pem",
        untrusted_ca_file=directory / "untrusted-ca.pem",
        server_cert_file=directory / "server.pem",
        server_key_file=directory / "server.key",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
        client_pem_file=directory / "client-cert-and-key.pem",
    )
    files = {
        pki.ca_file: _cert_pem(ca_cert),
        pki.untrusted_ca_file: _cert_pem(untrusted_cert),
        pki.server_cert_file: _cert_pem(server_cert) + _cert_pem(ca_cert),
        pki.server_key_file: _key_pem(server_key),
        pki.client_cert_file: _cert_pem(client_cert),
        pki.client_key_file: _key_pem(client_key),
        pki.client_pem_file: _cert_pem(client_cert) + _key_pem(client_key),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)  # keys; the certificates do not mind
    return pki
