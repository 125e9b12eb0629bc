"""Certificates made at test time (no PEM-looking literal in the tree)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def pair(names=("lab.test", "*.lab.test"), days: int = 30, serial: int | None = None
         ) -> tuple[bytes, bytes]:
    """(chain PEM, key PEM) of a self-signed leaf for `names`, valid `days` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A root, optionally with an intermediate under it, that issues server leaves as an
    ACME CA does: ``issue(names)`` answers (leaf + intermediate chain PEM, key PEM);
    ``root_pem`` is what a node trusts."""

    def __init__(self, name: str = "hostmesh test root", intermediate: bool = True):
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(name, self.root_key, None, None)
        self.key, self.cert, self.chain = self.root_key, self.root, b""
        if intermediate:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.cert = self._ca(f"{name} intermediate", self.key, self.root_key, self.root)
            self.chain = _pem(self.cert)

    def _ca(self, cn, key, signer, signer_cert):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(signer_cert.subject if signer_cert else subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(days=1))
                .not_valid_after(self.now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                             False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(signer or key, hashes.SHA256()))

    @property
    def root_pem(self) -> str:
        return _pem(self.root).decode()

    def issue(self, names=("lab.test", "*.lab.test"), days: float = 90,
              start_days: float = -1 / 24, with_chain: bool = True) -> tuple[bytes, bytes]:
        """A leaf for `names` from `start_days` to `days` from now (an hour back by default,
        as CAs backdate), with the intermediate after it unless `with_chain` is false."""
        from cryptography.x509.oid import ExtendedKeyUsageOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=start_days))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                             False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        return _pem(cert) + (self.chain if with_chain else b""), _key_pem(key)
