"""The MQTT client's transport (used by ``mqtt.MQTTClient``, which re-exports these names):
the TCP socket, and TLS that fails closed.

``tls`` is ``{"cafile": path, "server_hostname": name}`` (or ``cadata``), from which
``make_tls_context`` builds a context verifying the certificate and host name, or a ready
context, refused by ``check_tls`` unless ``verify_mode == CERT_REQUIRED`` (MicroPython's
``ssl.SSLContext`` defaults to ``CERT_NONE``). ``wrap_tls`` turns a failed verification
into ``MQTTTLSError`` (an ``OSError``) and closes the socket; there is no plaintext
fall-back. ``pem_to_der``: the node's Mbed TLS loads DER only.

Runs on MicroPython and CPython.
"""

import errno
import socket
from binascii import a2b_base64


class MQTTTLSError(OSError):
    """The TLS handshake failed verification (wrong CA, host name, expired certificate, a
    clock before the certificate's start): never retried in plaintext; raise an alarm."""

    def __init__(self, message):
        super().__init__(errno.ECONNABORTED, "MQTT TLS verification failed: " + message)


def tcp_socket(host, port, timeout_s):
    """A TCP socket connected to ``host``:``port``, with ``timeout_s`` on every operation."""
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(ai[-1])
    except BaseException:
        s.close()
        raise
    return s


def make_tls_context(cafile=None, cadata=None):
    """A client context that verifies the server certificate against ``cafile`` (a PEM
    path) or ``cadata`` (PEM bytes) and the host name given to ``wrap_socket``.

    On MicroPython this is the ``tls`` module's context (the frozen ``ssl`` module is a thin
    wrapper over it that defaults to ``CERT_NONE`` and is not on a custom ``sys.path``);
    on CPython, ``ssl``'s. Raises ``ValueError`` without a CA, ``OSError`` for a bad file."""
    if cafile:
        with open(cafile, "rb") as f:
            cadata = f.read()
    if not cadata:
        raise ValueError("tls: a CA (cafile or cadata) is required; verification is never off")
    try:
        import tls
    except ImportError:  # CPython
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=cadata.decode() if b"-----BEGIN" in cadata else cadata)
        return ctx
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    ctx.load_verify_locations(pem_to_der(cadata))
    return ctx


def pem_to_der(data):
    """The DER bytes of the first certificate in ``data`` (PEM or already DER): the unix
    port's Mbed TLS is built without PEM parsing, so the node always loads DER."""
    begin = data.find(b"-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return data
    start = data.find(b"\n", begin) + 1
    end = data.find(b"-----END", start)
    if start <= 0 or end < 0:
        raise ValueError("tls: truncated PEM certificate")
    return a2b_base64(data[start:end].replace(b"\r", b"").replace(b"\n", b""))


def check_tls(tls):
    """``ValueError`` unless ``tls`` is None, a verifying context, or a dict with a CA."""
    if tls is not None and not isinstance(tls, dict) and (
            getattr(tls, "verify_mode", 0) != 2 or getattr(tls, "check_hostname", True) is False):
        # 2 == CERT_REQUIRED in MicroPython's tls and CPython's ssl
        raise ValueError("tls: the context does not verify the server (verify_mode, check_hostname)")
    if isinstance(tls, dict) and not (tls.get("cafile") or tls.get("cadata")):
        raise ValueError("tls: cafile or cadata is required")


def wrap_tls(sock, tls, host):
    """``sock`` wrapped in TLS as ``tls`` says (the host name checked: ``server_hostname``
    or ``host``). On any failure ``sock`` is closed; a failed verification raises
    ``MQTTTLSError``."""
    try:
        if isinstance(tls, dict):
            ctx = make_tls_context(tls.get("cafile"), tls.get("cadata"))
            name = tls.get("server_hostname") or host
        else:
            ctx, name = tls, host
        return ctx.wrap_socket(sock, server_hostname=name)
    except ValueError as e:
        # Mbed TLS (MicroPython) and CPython report a failed verification as ValueError
        sock.close()
        raise MQTTTLSError(str(e).strip())
    except BaseException:
        sock.close()
        raise
