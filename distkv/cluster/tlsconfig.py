"""TLS: the node's certificate, key and CA, checked, and the contexts built from them.

:func:`load` reads PEM files (the node's certificate, optionally followed by
its chain; its unencrypted private key; a CA bundle) and checks what can be
checked before listening: each file is there and readable and holds what it
should, the key belongs to the certificate, and the certificate verifies
against the CA. Any problem is a :class:`TlsError` whose message names the
option and the file. The :class:`TlsConfig` it returns holds the context of
the TLS listener (the standard library's ``ssl``, served by
:mod:`distkv.front.tlstransport`), which asks every client for a certificate
and verifies one against the CA if it is given (a client need not send one,
like Redis's ``tls-auth-clients optional``), and, when a CA is given, the
context peers are dialled with: it presents our certificate and accepts the
peer's only if it verifies against the CA. No host name is checked: peers are
listed by address, and membership of the cluster is what the CA vouches for.
:class:`PeerGate` decides whether a connection may carry a peer handshake
(only TLS whose client certificate verifies against the CA) and logs,
rate-limited, refusals and failed TLS handshakes. pyOpenSSL (which checks the files
and dials peers) is optional: it is imported on first use here, and
:func:`require` turns its absence into a :class:`TlsError` that says what to
install.
"""

from __future__ import annotations

import re
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure

from distkv.ratelog import RateLimit, printable

log = Logger()

INSTALL = "pip install 'twisted[tls]' (or pip install 'txdistkv[tls]')"

#: The refusal code a peer handshake gets when it did not come over mutual TLS.
REFUSAL_CODE = "tls-required"


NO_CERTIFICATE = "no client certificate; a peer must present one signed by the cluster CA"


class TlsError(Exception):
    """A TLS setting that cannot work, said so that a user can fix it."""


def require() -> None:
    """Raise :class:`TlsError` unless pyOpenSSL (and cryptography) can be imported."""
    try:
        import cryptography.x509  # noqa: F401
        import OpenSSL.SSL  # noqa: F401
        import twisted.protocols.tls  # noqa: F401
    except ImportError as e:
        raise TlsError(f"TLS needs pyOpenSSL, which cannot be imported ({e}): {INSTALL}") from None


@dataclass(frozen=True)
class TlsConfig:
    """The TLS settings of one node (see :func:`load`)."""

    #: Context of the TLS listener (the standard library's, see
    #: :mod:`distkv.front.tlstransport`).
    server: ssl.SSLContext
    #: Context factory peers are dialled with; None: peer links are plain TCP.
    client: Optional[Any]
    #: The CA's certificates (pyOpenSSL X509), empty without --tls-ca.
    authorities: Tuple[Any, ...]
    #: Server endpoint of the TLS listener, e.g. ``tcp:9443:backlog=1024``.
    endpoint: Optional[str] = None

    @property
    def peer_tls(self) -> bool:
        """Whether peers link over mutual TLS only."""
        return self.client is not None

    def listening(self, factory: Any) -> Any:
        """``factory`` behind TLS with the listener's context."""
        from distkv.front.tlstransport import TlsServerFactory

        return TlsServerFactory(self.server, factory)

    def peer_refusal(self, transport: Any) -> Optional[str]:
        """Why ``transport`` may not carry a peer handshake, or None when it
        is TLS with a client certificate that verifies against the CA."""
        from OpenSSL import crypto
        from twisted.protocols.tls import TLSMemoryBIOProtocol

        from distkv.front.tlstransport import TlsServer

        if isinstance(transport, TlsServer) and self.authorities:
            if transport.verified_peer():
                return None  # OpenSSL verified it against the CA in the handshake
            return NO_CERTIFICATE
        if not isinstance(transport, TLSMemoryBIOProtocol) or not self.authorities:
            return "this connection is not TLS; peers link over mutual TLS to the TLS port"
        connection = transport.getHandle()
        certificate = connection.get_peer_certificate()
        if certificate is None:
            return NO_CERTIFICATE
        store = crypto.X509Store()
        for authority in self.authorities:
            store.add_cert(authority)
        chain = list(connection.get_peer_cert_chain() or [])
        try:
            crypto.X509StoreContext(store, certificate, chain).verify_certificate()
        except crypto.X509StoreContextError as e:
            return f"the client certificate does not verify against the cluster CA: {e}"
        return None


def check_endpoint(option: str, endpoint: str) -> None:
    """Parse an ``ssl:`` server endpoint, which reads its key and certificate
    files (it listens on nothing), so that a bad one is a :class:`TlsError`."""
    require()
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, endpoint)
    except OSError as e:
        raise TlsError(f"--{option} {endpoint}: cannot read {e.filename}: {e.strerror}") from None
    except Exception as e:
        raise TlsError(f"--{option} {endpoint}: {e or type(e).__name__}") from None


def load(cert: str, key: str, ca: Optional[str] = None,
         endpoint: Optional[str] = None) -> TlsConfig:
    """Read and check the PEM files; raise :class:`TlsError` on any problem."""
    require()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import crypto
    from twisted.internet.ssl import CertificateOptions, TLSVersion

    chain = _certificates("tls-cert", cert)
    try:
        private = serialization.load_pem_private_key(_read("tls-key", key), password=None)
    except TypeError:
        raise TlsError(f"--tls-key {key}: the key is encrypted; give an unencrypted key "
                       "file, readable only by the node's user") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise TlsError(f"--tls-key {key}: not a PEM private key ({e})") from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):
        raise TlsError(f"--tls-key {key} does not match the certificate in --tls-cert {cert}")
    pkey = crypto.PKey.from_cryptography_key(private)  # type: ignore[arg-type]
    leaf, *rest = [crypto.X509.from_cryptography(c) for c in chain]
    authorities: List[Any] = []
    if ca is not None:
        authorities = [crypto.X509.from_cryptography(c) for c in _certificates("tls-ca", ca)]
        store = crypto.X509Store()
        for authority in authorities:
            store.add_cert(authority)
        try:
            crypto.X509StoreContext(store, leaf, rest).verify_certificate()
        except crypto.X509StoreContextError as e:
            raise TlsError(f"--tls-cert {cert} does not verify against --tls-ca {ca} ({e}): "
                           "peers would refuse this node") from None
    common = dict(privateKey=pkey, certificate=leaf, extraCertChain=rest or None,
                  raiseMinimumTo=TLSVersion.TLSv1_2)
    client: Optional[Any] = None
    if authorities:
        client = CertificateOptions(verify=True, caCerts=authorities,
                                    requireCertificate=True, **common)
    return TlsConfig(_server_context(cert, key, ca), client, tuple(authorities), endpoint)


def _server_context(cert: str, key: str, ca: Optional[str]) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or later, our certificate (and chain);
    with a CA, a client certificate is asked for and, if sent, must verify
    against that CA alone (Redis's ``tls-auth-clients optional``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        context.load_cert_chain(cert, key)
        if ca is not None:
            context.load_verify_locations(cafile=ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as e:  # the files were read and checked just before
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: the TLS listener cannot "
                       f"use them ({e})") from None
    return context


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsError(f"--{option} {path}: no such file") from None
    except OSError as e:
        raise TlsError(f"--{option} {path}: cannot read it ({e.strerror})") from None


def _certificates(option: str, path: str) -> List[Any]:
    from cryptography import x509

    try:
        found = x509.load_pem_x509_certificates(_read(option, path))
    except ValueError as e:
        raise TlsError(f"--{option} {path}: no PEM certificate in it ({e})") from None
    return list(found)


def tls_failure(reason: Failure) -> Optional[str]:
    """What went wrong, when ``reason`` is a failed TLS handshake or record
    (the listener's ``ssl.SSLError``, or pyOpenSSL's on dialled links)."""
    if reason.check(ssl.SSLError) is not None and reason.value is not None:
        return _ssl_text(reason.value)
    if "OpenSSL" not in sys.modules:
        return None  # no TLS has run in this process
    from OpenSSL import SSL

    error = reason.check(SSL.Error)
    if error is None:
        return None
    value = reason.value
    args = getattr(value, "args", ())
    parts = args[0] if args and isinstance(args[0], list) else []
    text = "; ".join(str(part[-1]) for part in parts if isinstance(part, tuple))
    return text or str(value) or type(value).__name__


def _ssl_text(error: BaseException) -> str:
    """``ssl.SSLError``'s message without its ``[SSL: CODE]`` and ``(_ssl.c:N)`` parts,
    then what certificate verification said (e.g. "certificate verify failed:
    unable to get local issuer certificate")."""
    args: Tuple[Any, ...] = tuple(getattr(error, "args", ()))
    text = str(args[1]) if len(args) > 1 else str(error)
    text = re.sub(r"^\[[^\]]*\]\s*", "", re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text))
    verify = getattr(error, "verify_message", None)
    if verify and verify not in text:
        text = f"{text}: {verify}"
    return text or type(error).__name__


class PeerGate:
    """Lets only mutual-TLS connections carry peer handshakes; logs what it
    refuses, and failed TLS handshakes, at most one line per ``interval``."""

    def __init__(self, tls: TlsConfig, clock: Callable[[], float], interval: float = 5.0) -> None:
        self.tls = tls
        self._refusals = RateLimit(clock, interval)
        self._failures = RateLimit(clock, interval)
        #: Peer handshakes refused, and TLS handshakes failed, since the start.
        self.refused = 0
        self.failed = 0

    def refusal(self, transport: Any) -> Optional[Tuple[str, str]]:
        """The refusal for a peer handshake over ``transport``, or None to admit it."""
        why = self.tls.peer_refusal(transport)
        if why is None:
            return None
        self.refused += 1
        held = self._refusals.allow()
        if held >= 0:
            log.warn("Refusing a peer handshake from {address}: {why}{more}",
                     address=_address(transport), why=why, more=_more(held, "refused"))
        return REFUSAL_CODE, why

    def handshake_failed(self, transport: Any, reason: Failure) -> None:
        """A connection closed before it chose a protocol: log a TLS failure."""
        why = tls_failure(reason)
        if why is None:
            return
        self.failed += 1
        held = self._failures.allow()
        if held >= 0:
            log.warn("TLS handshake from {address} failed: {why}{more}",
                     address=_address(transport),
                     why=printable(why.encode("utf-8", "replace")), more=_more(held, "failed"))


def _more(held: int, what: str) -> str:
    return f" ({held} more {what} since the last such line)" if held else ""


def _address(transport: Any) -> str:
    peer = getattr(transport, "getPeer", None)
    address = peer() if peer is not None else None
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '?')}" if host is not None else "an unknown address"
