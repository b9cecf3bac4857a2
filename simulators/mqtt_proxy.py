"""A byte-level MQTT proxy for fault tests: between an MQTT client (the node's, or the
gateway's forwarder) and a real broker, it parses the packets each way (``protocol.mqtt_packets``),
records what the client sent, and can hold the broker's PUBACKs, cut the connection or
black-hole it. CPython only; loopback only."""

import socket
import threading
import time

from protocol import mqtt_packets as mp


class Relay:
    """A TCP relay on a loopback port (``listen_port``; 0: any free one, then ``port``) to
    ``target_port``: for each connection it opens one to the target and hands both to
    ``_connected`` (the subclass's pumps). A target that refuses (a broker restarting) closes
    the client's connection at once, as a missing broker would."""

    def __init__(self, target_port, listen_port=0):
        self.target = target_port
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = self.listener.getsockname()[1]
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _end(client)
                continue
            self._socks += [client, upstream]
            self._connected(client, upstream)

    def _connected(self, client, upstream):
        raise NotImplementedError

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a bare close would not)
        except OSError:
            pass
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


class Proxy(Relay):
    """A TCP proxy at the MQTT packet level between the node and the broker.

    ``hold_acks_from=k``: PUBACKs stop reaching the node once it has sent k PUBLISHes;
    ``cut_at=k``: after the k-th PUBLISH is forwarded, both sockets are closed;
    ``blackhole_at=k``: after the k-th PUBLISH nothing is forwarded either way, sockets
    stay open (a half-open link). Each fault fires on the first connection only.

    When either side closes, both sockets are shut down before they are closed: a close()
    alone would not end the other pump's recv() on Linux, so the node would never see its
    connection end (the broker's restart went unnoticed that way). An upstream that refuses
    (the broker restarting) closes the node's connection at once, as a missing broker would."""

    def __init__(self, port, hold_acks_from=None, cut_at=None, blackhole_at=None):
        self.hold_acks_from, self.cut_at, self.blackhole_at = hold_acks_from, cut_at, blackhole_at
        self.sent = []  # (kind, flags, body) from the node, across connections
        self.publishes = 0
        self.acks_forwarded = 0  # PUBACKs that reached the node
        self.hole = False  # black-hole the first connection (set by a test or blackhole_at)
        super().__init__(port)

    def _connected(self, client, upstream):
        first = self.connections == 1
        threading.Thread(target=self._pump, args=(client, upstream, True, first), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, False, first), daemon=True).start()

    def _pump(self, src, dst, from_node, first):
        reader = mp.PacketReader(1 << 20)
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                reader.feed(data)
                raw = reader.next_raw()
                while raw is not None:
                    kind, flags, body = raw
                    packet = bytes([kind << 4 | flags]) + mp.encode_remaining_length(len(body)) + body
                    forward = not (self.hole and first)
                    if from_node:
                        self.sent.append(raw)
                        if kind == mp.PUBLISH:
                            self.publishes += 1
                    elif kind == mp.PUBACK and first and self.hold_acks_from is not None \
                            and self.publishes >= self.hold_acks_from:
                        forward = False
                    if forward:
                        dst.sendall(packet)
                        if kind == mp.PUBACK and not from_node:
                            self.acks_forwarded += 1
                    if from_node and kind == mp.PUBLISH and first:
                        if self.publishes == self.blackhole_at:
                            self.hole = True
                        if self.publishes == self.cut_at:
                            time.sleep(0.2)  # let the broker read it and answer (held)
                            for s in (src, dst):
                                s.shutdown(socket.SHUT_RDWR)
                            return
                    raw = reader.next_raw()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _end(s)

    def node_publishes(self):
        return [mp.decode_packet(k, f, b) for k, f, b in self.sent if k == mp.PUBLISH]


def _end(sock):
    # shutdown first: it ends a recv() another thread is blocked in, and sends the FIN
    for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            step()
        except OSError:
            pass
