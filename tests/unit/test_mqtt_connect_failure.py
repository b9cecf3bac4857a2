"""``gateway.forward.mqtt_link.connect_failure``: the one place that tells a refused TLS
handshake (``tls``: what the ``tls_failure`` alarm watches) from a network failure, for the
upstream forwarder and the MQTT sources alike. Real ``ssl`` exceptions: the certificate
errors come from a real handshake against a server whose CA the client does not trust."""

import socket
import ssl
import threading

import pytest
import trustme

from gateway.forward.mqtt_link import connect_failure


def handshake_error(client_ca):
    """The exception a client trusting ``client_ca`` gets from a TLS server on loopback."""
    server_ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ca.issue_cert("localhost").configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            pass  # the client refused us: what the test looks at is on its side
        finally:
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = ssl.create_default_context()
    client_ca.configure_trust(client)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            client.wrap_socket(raw, server_hostname="localhost")
    except OSError as e:
        return e
    finally:
        t.join(10)
        listener.close()
    pytest.fail("the handshake went through")


def test_a_certificate_the_client_does_not_trust_is_tls():
    err = handshake_error(trustme.CA())  # a CA that did not sign the server's
    kind, detail = connect_failure(err)
    assert kind == "tls" and "certificate verify failed" in detail and "ca_file" in detail


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
    ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
    ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"),
    OSError(113, "No route to host"),
])
def test_a_peer_gone_or_unreachable_is_network(exc):
    kind, detail = connect_failure(exc)
    assert kind == "network" and detail
