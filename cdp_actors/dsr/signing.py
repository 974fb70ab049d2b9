"""The processor's signing key: callbacks and answers are signed RSA-SHA256 over the raw body, and the certificate
is published at the URL `/discovery` gives as `processor_certificate`
(https://docs.mparticle.com/developers/apis/dsr-api/v3/#callbacks).

The key and a self-signed certificate issued to the processor domain are made once in the data directory (the key
file readable by the owner only). A deployment that must present a CA-issued certificate (OpenDSR asks for one)
replaces both files with its own, keeping their names.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from cdp_actors.storage.lmdb_env import PRIVATE_FILE_MODE, make_private_dir, open_private

KEY_FILE = "dsr_key.pem"
CERTIFICATE_FILE = "dsr_cert.pem"
KEY_BITS = 2048
CERTIFICATE_VALID_DAYS = 3650
"""Self-signed, made once: ten years, so that it does not expire under a running deployment."""


class Signer:
    def __init__(self, directory: str | Path, domain: str) -> None:
        self.directory = make_private_dir(directory)
        key_path, cert_path = self.directory / KEY_FILE, self.directory / CERTIFICATE_FILE
        if not key_path.exists() or not cert_path.exists():
            _make(key_path, cert_path, domain)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key
        self.certificate_pem = cert_path.read_bytes()

    def sign(self, body: bytes) -> str:
        """Base64 of the RSA-SHA256 (PKCS#1 v1.5) signature of `body`."""
        return base64.b64encode(self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(certificate_pem: bytes, body: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is the certificate's key's RSA-SHA256 signature of `body`: what a controller
    checks before parsing a callback."""
    public_key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(base64.b64decode(signature), body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _make(key_path: Path, cert_path: Path, domain: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(key_path, pem)
    _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM))


def _write(path: Path, data: bytes) -> None:
    """Written whole under a temporary name, then renamed: a crash leaves no half file."""
    temporary = path.with_suffix(".tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, PRIVATE_FILE_MODE)
    os.replace(temporary, path)
