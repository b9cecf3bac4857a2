"""One modem's way onto the simulated radio: ``NodeLink``, the ``network`` callback of
``simulators.atmodem.ATModemEmulator`` that ``lorawan_radio.Radio.link`` makes (modem emulator
→ radio → network-server stand-in), and ``JoinRequest``, a join request as an emulator that
asks its network would pass it (docs/simulation-lorawan.md)."""

from protocol import airtime
from simulators.atmodem_radio import JOIN_REQUEST_PHY
from simulators.lorawan_radio import _us


class JoinRequest:
    """A join request as the proposed emulator hook would pass it (``NodeLink.join``)."""

    FIELDS = ("dev_eui", "join_eui", "dr", "freq_hz", "t_s")

    def __init__(self, **kw):
        for name in self.FIELDS:
            setattr(self, name, kw.get(name))


class NodeLink:
    """One modem's ``network`` callback: emulator → radio → network server.

    ``link(uplink)`` (an ``atmodem_radio.Uplink``) transmits the frame on the radio (as
    node ``node``, default the uplink's DevEUI) and, if any gateway heard it, hands it to
    ``ns.receive(uplink, transmission)``. Its verdict reaches the modem through the
    emulator's own controls: a downlink the network sends is ``queue_downlink``-ed for this
    uplink's receive window (with the best gateway's RSSI/SNR: the path is taken as
    symmetric), and a confirmed uplink the network did not acknowledge (lost on air,
    dropped by the network) gets the emulator's ``no_ack`` for this very uplink.
    ``join(request)`` is the same path for a join request (for an emulator that asks its
    network; see docs/simulation-lorawan.md). ``last`` holds the last (transmission, verdict);
    ``counters`` what went each way.
    """

    def __init__(self, radio, ns=None, emulator=None, node=None):
        self.radio, self.ns, self.emulator, self.node = radio, ns, emulator, node
        self.last = None
        self.counters = {"uplinks": 0, "heard": 0, "accepted": 0, "acks_withheld": 0,
                         "downlinks": 0, "join_requests": 0, "joins_accepted": 0}

    def attach(self, emulator):
        """Use ``emulator`` for ACK and downlink hand-over and make this its callback."""
        self.emulator = emulator
        emulator.network = self
        return self

    def _node(self, dev_eui):
        return self.node if self.node is not None else str(dev_eui).upper()

    def __call__(self, up):
        phy = airtime.app_payload_to_phy(len(up.payload))
        tx = self.radio.transmit(self._node(up.dev_eui), up.freq_hz, up.dr, phy, _us(up.t_s), tag=up)
        verdict = self.ns.receive(up, tx) if (self.ns is not None and tx.heard) else None
        self.last = (tx, verdict)
        c = self.counters
        c["uplinks"] += 1
        c["heard"] += 1 if tx.heard else 0
        c["accepted"] += 1 if (verdict is not None and verdict.accepted) else 0
        emu = self.emulator
        if emu is None:
            return
        if verdict is not None and verdict.downlink is not None:
            port, payload = verdict.downlink
            best = tx.best()
            emu.queue_downlink(port, payload, rssi_dbm=int(round(best.rssi_dbm)),
                               snr_db=round(best.snr_db, 1))
            c["downlinks"] += 1
        if up.confirmed and not (verdict is not None and verdict.ack):
            # "from this command on": the emulator takes it for the uplink it is sending now
            emu.fault("no_ack", 1, after=-1)
            c["acks_withheld"] += 1

    def join(self, req):
        """Transmit a join request; True if a gateway heard it and the network accepted."""
        tx = self.radio.transmit(self._node(req.dev_eui), req.freq_hz, req.dr, JOIN_REQUEST_PHY,
                                 _us(req.t_s), tag=req)
        accepted = bool(tx.heard and self.ns is not None and self.ns.join(req.dev_eui, tx))
        self.last = (tx, accepted)
        self.counters["join_requests"] += 1
        self.counters["joins_accepted"] += 1 if accepted else 0
        return accepted
