"""The simulated LoRa radio between the nodes' modems and the LoRaWAN gateways.

``Radio(channels, seed, sites=...)`` decides, for every frame a node transmits, which
gateways receive it and with what RSSI and SNR. It is pure and seeded: no wall clock, no
I/O; times are the frames' own start times on the simulation's ``VirtualClock`` (integer
µs), so the same seed and the same frames give the same outcome. ``Radio.link(ns,
emulator)`` makes the ``network`` callback of ``simulators.atmodem.ATModemEmulator`` that
puts the radio between the modem and the network-server stand-in
(``simulators.lorawan_ns.NetworkServer``; the callback is ``simulators.lorawan_link``).
docs/simulation-lorawan.md explains the models and where every number comes from.

Theory of operation
-------------------
- **Placement**: ``sites = {node: {gateway_id: distance_m}}``. A node is named by its
  upper-case DevEUI unless its link says otherwise; every gateway any node lists exists.
- **Airtime**: ``protocol.airtime.time_on_air_ms`` of the PHY payload at the frame's SF and
  bandwidth (EU868 DR table, REFERENCE.md §6.1); the frame is on air over
  ``[start_us, start_us + airtime)``.
- **Duty cycle**: the modem enforces it; the radio keeps a ``protocol.airtime.DutyCycle``
  per node and counts a frame the node's sub-band budget would not have allowed
  (``duty_cycle_violations``): a check on the modem model, never a reason to lose a frame.
- **Link budget**: RSSI = TX power − PL(d) + fading, with the log-distance path loss
  PL(d) = PL(d0) + 10·n·log10(d / d0) and a Gaussian fading term (dB) drawn per frame and
  gateway from a generator keyed by (seed, node, the node's frame number, gateway), so the
  draw does not depend on which other nodes transmitted or in what order threads ran. SNR =
  RSSI − noise floor (−174 dBm/Hz + 10·log10(BW) + noise figure). A gateway demodulates the
  frame when its SNR reaches the SF's demodulator threshold (REFERENCE.md §6.3), i.e. when
  RSSI ≥ the SF's sensitivity.
- **Collisions** (decided against the frames that started before it, in virtual time): a
  frame that starts while another frame is on air at the same frequency, SF and bandwidth is
  lost at a gateway unless it arrives there at least ``capture_db`` (6 dB) stronger than
  every such frame (capture). The frame already on air keeps the receiver it locked onto and
  is never lost afterwards: the emulator asks the network for its verdict (ACK, downlink) as
  a frame starts, so a verdict must not change later. Where physics would also have hit the
  earlier frame (the newcomer not ≥ 6 dB weaker) it is counted in ``late_interference``.
  Different SFs are taken as orthogonal. "Before" is by start time, ties broken by a seeded
  hash of (node, frame number) (``order_key``), never by the order ``transmit`` is called in:
  so that the outcome is a function of the virtual schedule alone, a simulation whose nodes
  run ahead of each other in real time sets ``order``, a callable ``order(node, start_us,
  key)`` that returns once no other node can still start a frame before this one (the fleet:
  ``simulators.fleet.inject.RadioOrder``). Without it (one node, or tests that call in start
  order) a frame that arrives after a later-starting one was decided is decided against the
  frames before it all the same, and the later one's fixed verdict is counted in
  ``out_of_order``.
- **Faults**: ``jam(freq_hz, start_s, end_s)`` — a frame overlapping the window on that
  frequency is lost (at the listed gateways, default all); ``outage(gateway_id, start_s,
  end_s)`` — the gateway hears nothing overlapping the window.

Per frame, ``Transmission.receptions`` lists ``Reception(gateway_id, rssi_dbm, snr_db,
channel)`` for each gateway that received it; ``losses`` says why each other gateway did
not (``gateway_down``, ``jammed``, ``sensitivity``, ``collision``, ``off_channel``).
"""

import hashlib
import math
import random
import threading

from protocol import airtime
from simulators.atmodem_radio import CHANNELS_HZ

# Thermal noise density kT at 290 K, dBm/Hz; with the receiver's noise figure and the
# channel bandwidth it gives the noise floor. NF 6 dB: Semtech's SX1276 reference driver
# (SX1276Lib sx1276.h, NOISE_ABSOLUTE_ZERO -174.0, NOISE_FIGURE_HF 6.0; found with the
# search tool — REFERENCE.md has no noise figure).
NOISE_DBM_PER_HZ = -174.0
NOISE_FIGURE_DB = 6.0
# Demodulator SNR threshold per SF: REFERENCE.md §6.3 (ChirpStack's required SNR), the
# same as the SX1276 datasheet's Table 13 "LoRa Demodulator SNR" (Rev. 4 p. 27). With
# NF 6 dB at 125 kHz this gives sensitivities of -124.5 (SF7) ... -137.0 dBm (SF12); the
# SX1272 datasheet's RFS_L125 lists -124 ... -137 dBm (Rev. 2 p. 19), within 1 dB.
REQUIRED_SNR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
CAPTURE_DB = 6.0  # capture threshold (Bor et al. 2016, LoRaSim's power_threshold = 6 dB)
TX_POWER_DBM = 16.0  # EU868 max EIRP = TXPower 0 (REFERENCE.md §6.2), the most a node may use
# Log-distance path loss and shadowing measured at 868 MHz in Lancaster, UK (Bor, Roedig,
# Voigt, Alonso: "Do LoRa Low-Power Wide-Area Networks Scale?", MSWiM 2016; the defaults
# of LoRaSim, of INET's LoRaLogNormalShadowing and of FLoRa's examples, **.sigma = 3.57):
# d0 40 m, PL(d0) 127.41 dB, n 2.08, sigma 3.57 dB. A built-up area: half the frames arrive at ~170 m at SF7, ~680 m at SF12.
PATH_LOSS = {"d0_m": 40.0, "pl_d0_db": 127.41, "exponent": 2.08, "sigma_db": 3.57}
KEEP_ON_AIR_US = 600 * 1000000  # frames older than this before the newest start are forgotten
LOSS_REASONS = ("off_channel", "gateway_down", "jammed", "sensitivity", "collision")


def noise_floor_dbm(bw_hz=125000, noise_figure_db=NOISE_FIGURE_DB):
    """Receiver noise floor (dBm) over ``bw_hz``: -117.0 dBm at 125 kHz with NF 6 dB."""
    return NOISE_DBM_PER_HZ + 10.0 * math.log10(bw_hz) + noise_figure_db


def sensitivity_dbm(sf, bw_hz=125000, noise_figure_db=NOISE_FIGURE_DB):
    """Weakest RSSI (dBm) a gateway demodulates at ``sf``: noise floor + required SNR."""
    if sf not in REQUIRED_SNR_DB:
        raise ValueError("sf must be 7..12, got %r" % (sf,))
    return noise_floor_dbm(bw_hz, noise_figure_db) + REQUIRED_SNR_DB[sf]


def path_loss_db(distance_m, d0_m=40.0, pl_d0_db=127.41, exponent=2.08, **_):
    """Mean log-distance path loss (dB) at ``distance_m`` (≥ 1 m is assumed below 1 m)."""
    if not distance_m >= 0:
        raise ValueError("distance_m must be >= 0, got %r" % (distance_m,))
    return pl_d0_db + 10.0 * exponent * math.log10(max(distance_m, 1.0) / d0_m)


def reception_probability(distance_m, sf, bw_hz=125000, tx_power_dbm=TX_POWER_DBM,
                          path_loss=None, noise_figure_db=NOISE_FIGURE_DB):
    """Chance (0..1) that one frame alone on its channel is received at ``distance_m``:
    P(fading ≥ sensitivity − mean RSSI). Never increases with distance."""
    pl = dict(PATH_LOSS, **(path_loss or {}))
    margin = tx_power_dbm - path_loss_db(distance_m, **pl) - sensitivity_dbm(sf, bw_hz, noise_figure_db)
    if pl["sigma_db"] <= 0:
        return 1.0 if margin >= 0 else 0.0
    return 0.5 * math.erfc(-margin / (pl["sigma_db"] * math.sqrt(2.0)))


def _overlap(a_start, a_end, b_start, b_end):
    return a_start < b_end and b_start < a_end


class Reception:
    """One gateway's copy of a frame: ``gateway_id``, ``rssi_dbm`` and ``snr_db`` (floats),
    ``channel`` (index into the radio's channel list)."""

    __slots__ = ("gateway_id", "rssi_dbm", "snr_db", "channel")

    def __init__(self, gateway_id, rssi_dbm, snr_db, channel):
        self.gateway_id, self.rssi_dbm, self.snr_db, self.channel = gateway_id, rssi_dbm, snr_db, channel

    def __repr__(self):
        return "Reception(%r, rssi_dbm=%.1f, snr_db=%.1f, channel=%d)" % (
            self.gateway_id, self.rssi_dbm, self.snr_db, self.channel)


class Transmission:
    """One frame on air and its outcome (see the module docstring)."""

    def __init__(self, node, index, freq_hz, channel, dr, sf, bw_hz, phy_bytes, start_us,
                 airtime_ms, tag=None):
        self.node, self.index, self.freq_hz, self.channel = node, index, freq_hz, channel
        self.dr, self.sf, self.bw_hz, self.phy_bytes = dr, sf, bw_hz, phy_bytes
        self.start_us, self.airtime_ms = start_us, airtime_ms
        self.end_us = start_us + int(math.ceil(airtime_ms * 1000))
        self.tag = tag  # what was sent (the emulator's Uplink), for whoever reads the log
        self.power_dbm = {}  # gateway -> received power (with fading), heard or not
        self.receptions = []
        self.losses = {}  # gateway -> reason
        self.collided_with = []  # (node, index) of the overlapping frames already on air
        self.duty_cycle_violation = False

    @property
    def heard(self):
        return bool(self.receptions)

    def best(self):
        """The reception with the highest SNR (None when no gateway heard the frame)."""
        return max(self.receptions, key=lambda r: (r.snr_db, r.rssi_dbm)) if self.receptions else None

    def __repr__(self):
        return "Transmission(%s #%d, %d Hz SF%d, %.1f ms at %d us, heard by %s, lost at %s)" % (
            self.node, self.index, self.freq_hz, self.sf, self.airtime_ms, self.start_us,
            [r.gateway_id for r in self.receptions], self.losses)


class Radio:
    """The radio channel (module docstring). All constructor arguments are JSON-able.

    ``channels``: the uplink frequencies (Hz) the gateways listen on (default EU868's three
    default channels); ``seed``; ``sites``: {node: {gateway_id: distance_m}};
    ``tx_power_dbm``: the nodes' EIRP; ``path_loss``: overrides of ``PATH_LOSS`` (``d0_m``,
    ``pl_d0_db``, ``exponent``, ``sigma_db``); ``capture_db``; ``noise_figure_db``;
    ``keep_log``: keep every ``Transmission`` in ``log``."""

    def __init__(self, channels=CHANNELS_HZ, seed=0, sites=None, tx_power_dbm=TX_POWER_DBM,
                 path_loss=None, capture_db=CAPTURE_DB, noise_figure_db=NOISE_FIGURE_DB,
                 keep_log=True):
        self.channels = [int(f) for f in channels]
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must be distinct frequencies, got %r" % (channels,))
        self.seed = seed
        unknown = set(path_loss or ()) - set(PATH_LOSS)
        if unknown:
            raise ValueError("path_loss has unknown keys %s" % sorted(unknown))
        self.path_loss = dict(PATH_LOSS, **(path_loss or {}))
        self.tx_power_dbm = tx_power_dbm
        self.order = None  # see "Collisions" in the module docstring
        self.capture_db = capture_db
        self.noise_figure_db = noise_figure_db
        self.sites = {}
        self._lock = threading.Lock()
        for node, dist in (sites or {}).items():
            self.place(node, dist)
        self.log = [] if keep_log else None
        self.counters = {name: 0 for name in (
            "transmissions", "heard", "lost", "receptions", "collisions", "captures",
            "late_interference", "out_of_order", "duty_cycle_violations", "jammed_windows", "outages")}
        for reason in LOSS_REASONS:
            self.counters["lost_at_gateway." + reason] = 0
        self._jams = []  # [freq_hz, start_us, end_us or None, gateways or None]
        self._outages = []  # [gateway_id, start_us, end_us or None]
        self._on_air = []
        self._index = {}  # node -> frames sent so far
        self._duty = {}  # node -> airtime.DutyCycle

    # -- configuration -----------------------------------------------------------------------
    def place(self, node, distances):
        """Put ``node`` at ``distances`` = {gateway_id: metres} (replacing what it had)."""
        dist = {}
        for gw, d in distances.items():
            if not isinstance(d, (int, float)) or isinstance(d, bool) or not d >= 0:
                raise ValueError("distance to %r must be a number of metres >= 0, got %r" % (gw, d))
            dist[str(gw)] = float(d)
        with self._lock:
            self.sites[str(node)] = dist

    @property
    def gateways(self):
        """Every gateway any node is placed against, sorted."""
        return sorted({gw for dist in self.sites.values() for gw in dist})

    def jam(self, freq_hz, start_s, end_s=None, gateways=None):
        """Jam ``freq_hz`` from ``start_s`` to ``end_s`` (virtual monotonic s; None: for
        ever) at ``gateways`` (None: all)."""
        if freq_hz not in self.channels:
            raise ValueError("freq_hz must be one of the channels %s, got %r" % (self.channels, freq_hz))
        with self._lock:
            self._jams.append([freq_hz, _us(start_s), None if end_s is None else _us(end_s),
                               None if gateways is None else set(gateways)])
            self.counters["jammed_windows"] += 1

    def outage(self, gateway_id, start_s, end_s=None):
        """``gateway_id`` hears nothing from ``start_s`` to ``end_s`` (None: for ever)."""
        with self._lock:
            self._outages.append([gateway_id, _us(start_s), None if end_s is None else _us(end_s)])
            self.counters["outages"] += 1

    def link(self, ns=None, emulator=None, node=None):
        """The ``network`` callback for ``emulator`` (``simulators.lorawan_link.NodeLink``)."""
        from simulators.lorawan_link import NodeLink

        return NodeLink(self, ns, emulator, node)

    # -- the model ---------------------------------------------------------------------------
    def mean_rssi_dbm(self, node, gateway_id):
        """RSSI (dBm) of ``node`` at ``gateway_id`` without fading (None: not placed there)."""
        d = self.sites.get(node, {}).get(gateway_id)
        return None if d is None else self.tx_power_dbm - path_loss_db(d, **self.path_loss)

    def _fading_db(self, node, index, gateway_id):
        sigma = self.path_loss["sigma_db"]
        if sigma <= 0:
            return 0.0
        key = ("%r|%s|%d|%s" % (self.seed, node, index, gateway_id)).encode()
        rng = random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))
        return rng.gauss(0.0, sigma)

    def transmit(self, node, freq_hz, dr, phy_bytes, start_us, tag=None):
        """Put one frame on air and decide its fate: ``node`` (a ``sites`` key), ``freq_hz``,
        EU868 ``dr`` (0..6), ``phy_bytes`` (PHY payload length), ``start_us`` (virtual µs).
        Returns the ``Transmission``. Raises ``ValueError`` for a bad DR or length."""
        sf, bw, _ = airtime.DR_EU868.get(dr, (None, None, None)) if isinstance(dr, int) else (None,) * 3
        if sf is None:
            raise ValueError("dr must be an EU868 LoRa data rate 0..6, got %r" % (dr,))
        toa = airtime.time_on_air_ms(phy_bytes, sf, bw)
        node = str(node)
        with self._lock:
            index = self._index.get(node, 0)
            self._index[node] = index + 1
        key = self.order_key(node, index)
        if self.order is not None:
            self.order(node, int(start_us), key)  # outside the lock: others may transmit meanwhile
        with self._lock:
            channel = self.channels.index(freq_hz) if freq_hz in self.channels else -1
            tx = Transmission(node, index, freq_hz, channel, dr, sf, bw, phy_bytes, int(start_us),
                              toa, tag)
            tx.order = (tx.start_us, key)
            self.counters["transmissions"] += 1
            self._check_duty(tx)
            self._decide(tx)
            self.counters["heard" if tx.heard else "lost"] += 1
            self.counters["receptions"] += len(tx.receptions)
            for reason in tx.losses.values():
                self.counters["lost_at_gateway." + reason] += 1
            self._on_air = [t for t in self._on_air if t.end_us > tx.start_us - KEEP_ON_AIR_US]
            self._on_air.append(tx)
            if self.log is not None:
                self.log.append(tx)
        return tx

    def order_key(self, node, index):
        """The seeded tie-break between frames that start at the same µs (an int)."""
        key = ("order|%r|%s|%d" % (self.seed, node, index)).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")

    def _check_duty(self, tx):
        try:
            band = airtime.subband(tx.freq_hz)
        except ValueError:
            tx.duty_cycle_violation = True  # outside every EU868 sub-band: never allowed
        else:
            duty = self._duty.setdefault(tx.node, airtime.DutyCycle())
            now_ms = tx.start_us // 1000
            if tx.airtime_ms > airtime.hourly_budget_ms(band):
                tx.duty_cycle_violation = True  # longer than the band's whole hour
            else:
                tx.duty_cycle_violation = not duty.can_send(band, tx.airtime_ms, now_ms)
                duty.record(band, tx.airtime_ms, now_ms)
        if tx.duty_cycle_violation:
            self.counters["duty_cycle_violations"] += 1

    def _down(self, gw, tx):
        return any(o[0] == gw and _overlap(tx.start_us, tx.end_us, o[1], _end(o[2]))
                   for o in self._outages)

    def _jammed(self, gw, tx):
        return any(j[0] == tx.freq_hz and (j[3] is None or gw in j[3])
                   and _overlap(tx.start_us, tx.end_us, j[1], _end(j[2])) for j in self._jams)

    def _decide(self, tx):
        overlapping = [t for t in self._on_air if t.freq_hz == tx.freq_hz and t.sf == tx.sf
                       and t.bw_hz == tx.bw_hz and _overlap(tx.start_us, tx.end_us, t.start_us, t.end_us)]
        others = [t for t in overlapping if t.order < tx.order]  # on air first (virtual time)
        self.counters["out_of_order"] += len(overlapping) - len(others)
        self.counters["collisions"] += len(others)
        tx.collided_with = [(t.node, t.index) for t in others]
        sens = sensitivity_dbm(tx.sf, tx.bw_hz, self.noise_figure_db)
        floor = noise_floor_dbm(tx.bw_hz, self.noise_figure_db)
        captured = False
        for gw in sorted(self.sites.get(tx.node, {})):
            power = self.mean_rssi_dbm(tx.node, gw) + self._fading_db(tx.node, tx.index, gw)
            tx.power_dbm[gw] = power
            rivals = [t.power_dbm[gw] for t in others if gw in t.power_dbm]
            if tx.channel < 0:
                reason = "off_channel"
            elif self._down(gw, tx):
                reason = "gateway_down"
            else:
                # What the causal rule spares: an earlier frame this one would have hit.
                hit = sum(1 for p in rivals if p - power < self.capture_db)
                self.counters["late_interference"] += hit
                if self._jammed(gw, tx):
                    reason = "jammed"
                elif power < sens:
                    reason = "sensitivity"
                elif any(power - p < self.capture_db for p in rivals):
                    reason = "collision"
                else:
                    reason = None
                    captured = captured or bool(rivals)
            if reason is None:
                tx.receptions.append(Reception(gw, power, power - floor, tx.channel))
            else:
                tx.losses[gw] = reason
        self.counters["captures"] += 1 if captured else 0


def _us(seconds):
    return int(round(seconds * 1000000))


def _end(end_us):
    return end_us if end_us is not None else 1 << 62
