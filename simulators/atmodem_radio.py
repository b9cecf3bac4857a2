"""The radio side of ``simulators.atmodem``: the LoRaWAN model both dialects share.

``RadioModel`` is a mixin of ``ATModemEmulator`` (it uses the emulator's ``clock``,
``rng``, ``duty``, ``counters``, fault scripting ``_take`` and output ``_emit``): the
virtual-time timeline (``_at`` schedules output the modem prints later, ``_run_timeline``
writes it when due, ``_busy`` while the radio is transmitting or listening), channel choice
and duty-cycle budgeting per sub-band, the OTAA join request/accept, and one uplink's plan
(airtime, frame counter, ACK, the downlink delivered in RX1 or RX2). ``Uplink`` is what the
network stand-in receives. Timing constants: REFERENCE.md §6.2.
"""

import heapq

from protocol import airtime

RECEIVE_DELAY1_MS = 1000  # REFERENCE §6.2 (spec defaults)
RECEIVE_DELAY2_MS = 2000
JOIN_ACCEPT_DELAY1_MS = 5000
JOIN_ACCEPT_DELAY2_MS = 6000
RX2_DR = 0  # RX2 869.525 MHz at DR0, the spec default
JOIN_REQUEST_PHY = 23  # MHDR 1, JoinEUI 8, DevEUI 8, DevNonce 2, MIC 4
JOIN_ACCEPT_PHY = 17  # MHDR 1, JoinNonce 3, NetID 3, DevAddr 4, DLSettings 1, RxDelay 1, MIC 4
ACK_PHY = 12  # an empty downlink: MHDR, DevAddr, FCtrl, FCnt, MIC
CHANNELS_HZ = (868100000, 868300000, 868500000)  # EU868 default channels (band M)


class Uplink:
    """One transmitted uplink, as the network stand-in sees it."""

    FIELDS = ("dev_eui", "dev_addr", "fcnt", "port", "payload", "dr", "confirmed", "airtime_ms",
              "freq_hz", "t_s")

    def __init__(self, **kw):
        for name in self.FIELDS:
            setattr(self, name, kw[name])

    def as_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self):
        return "Uplink(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())


def _hex(text, nbytes=None):
    t = text.strip().strip('"').replace(" ", "").replace(":", "")
    if len(t) % 2 or (nbytes is not None and len(t) != 2 * nbytes):
        return None
    try:
        return bytes.fromhex(t)
    except ValueError:
        return None


def _sf_bw(dr):
    return airtime.DR_EU868[dr][:2]


class RadioModel:
    """Timeline, duty-cycle budget, join and uplink model (a mixin of ``ATModemEmulator``)."""

    # -- time ------------------------------------------------------------------------------
    def _now_ms(self):
        return self.clock.now_us // 1000

    def _at(self, delay_ms, fn):
        self._seq += 1
        due = self.clock.now_us + int(round(delay_ms * 1000))
        heapq.heappush(self._timeline, (due, self._seq, fn))
        self._busy_until_us = max(self._busy_until_us, due)

    def _run_timeline(self):
        while self._timeline:
            due = self._timeline[0][0]
            if due > self.clock.now_us:
                if self.time_mode != "advance":
                    return
                if self.clock_lock is not None:
                    with self.clock_lock:
                        self.clock.advance_us(max(0, due - self.clock.now_us))
                else:
                    self.clock.advance_us(max(0, due - self.clock.now_us))
            self._guarded(heapq.heappop(self._timeline)[2])

    def _busy(self):
        if self.clock.now_us < self._busy_until_us or self._take("busy"):
            self.counters["busy_replies"] += 1
            return True
        return False

    # -- shared LoRaWAN behaviour ------------------------------------------------------------
    def _channel(self):
        freq = self.rng.choice(CHANNELS_HZ)
        return freq, airtime.subband(freq)

    def _budget(self, toa):
        """(freq, band) if a frame of ``toa`` may start now, else the wait in ms."""
        freq, band = self._channel()
        wait = self.duty.wait_ms(band, toa, self._now_ms())
        if wait:
            self.counters["duty_cycle_refusals"] += 1
            return wait
        self.duty.record(band, toa, self._now_ms())
        return freq, band

    def _join_request(self):
        """Check and transmit one join request: ("busy"|("duty", ms)|(accepted, toa))."""
        if self._busy():
            return "busy"
        sf, bw = _sf_bw(self.dr)
        toa = airtime.time_on_air_ms(JOIN_REQUEST_PHY, sf, bw)
        got = self._budget(toa)
        if not isinstance(got, tuple):
            return ("duty", got)
        self.counters["join_requests"] += 1
        key_ok = self.app_key is not None and self.expected_app_key in (None, self.app_key)
        if self.join_failures > 0:
            self.join_failures -= 1
            accepted = False
        else:
            accepted = key_ok and not self._take("join_fail") and \
                self.rng.random() < self.join_accept_probability
        self.joined = False
        return accepted, toa

    def _accept_join(self):
        self.joined = True
        self.joins += 1
        self.counters["joins"] += 1
        self.dev_addr = (0x26 << 24) | self.rng.getrandbits(24)
        self.fcnt_up = 0

    def _uplink(self, port, payload, confirmed):
        """Check and transmit one uplink: a refusal string/tuple, or the plan dict."""
        if not self.joined:
            return "not_joined"
        if self._busy():
            return "busy"
        n_max = airtime.DR_EU868[self.dr][2]
        if len(payload) > n_max:
            return ("length", n_max)
        sf, bw = _sf_bw(self.dr)
        toa = airtime.time_on_air_ms(airtime.app_payload_to_phy(len(payload)), sf, bw)
        got = self._budget(toa)
        if not isinstance(got, tuple):
            return ("duty", got)
        up = Uplink(dev_eui=self.dev_eui, dev_addr=self.dev_addr, fcnt=self.fcnt_up, port=port,
                    payload=payload, dr=self.dr, confirmed=confirmed, airtime_ms=toa,
                    freq_hz=got[0], t_s=self.clock.monotonic_s())
        self.fcnt_up += 1
        self.uplinks.append(up)
        self.counters["uplinks"] += 1
        if self.network is not None:
            self.network(up)
        acked = confirmed and not self._take("no_ack") and self.rng.random() < self.ack_probability
        dl = self._downlinks.pop(0) if self._downlinks and (acked or not confirmed) else None
        window = dl["window"] if dl else self.rx_window
        plan = {"acked": acked, "dl": dl, "window": window, "pending": bool(self._downlinks),
                "rssi": dl["rssi"] if dl else self.rssi_dbm, "snr": dl["snr"] if dl else self.snr_db}
        if dl or acked:
            rx_sf, rx_bw = _sf_bw(self.dr if window == 1 else RX2_DR)
            phy = 13 + len(dl["payload"]) if dl else ACK_PHY
            dl_toa = airtime.time_on_air_ms(phy, rx_sf, rx_bw, crc=False)  # downlinks carry no CRC
            plan["delay_ms"] = toa + (RECEIVE_DELAY1_MS if window == 1 else RECEIVE_DELAY2_MS) + dl_toa
            self.counters["acks"] += 1 if acked else 0
            self.counters["downlinks"] += 1 if dl else 0
            if dl:
                self.last_downlink = dl
        else:
            plan["delay_ms"] = toa + RECEIVE_DELAY2_MS
        return plan
