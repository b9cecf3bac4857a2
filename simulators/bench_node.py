"""The node benchmarks of issue 3 (``scripts/bench bytes uplink energy``), registered in
``simulators/bench.py`` and written to ``docs/benchmarks.md`` like the others.

The readings are the ones the real drivers produce from the simulated sensors:
``simulators.daysim.run_day`` per profile (seed 1), turned into issue 3's reading dicts
``{"seq", "t", "values": [[quantity, value, "ok"], ...]}`` with the driver's values unrounded,
as the firmware logs them. Street NO2 logs the mean of each ``mean_period_s`` (15 min) as
``firmware/app/node.py`` does, so its records are those means. A "4-value reading" (the
issue's goal) is the classroom reading plus ``battery_v``.

``bytes``   bytes per reading for the same readings on each link: SenML-CBOR in a node frame
            (serial: COBS + CRC-32 + delimiters; MQTT: the frame is the payload), the
            LoRaWAN pack, Cayenne LPP with a time stamp; baseline SenML JSON.
``uplink``  readings per LoRaWAN uplink at DR0 (51 B) and DR5 (222 B) against Cayenne LPP.
``energy``  in ``simulators/bench_node_energy.py``: awake time, charge per wake and battery
            life per profile and link.
"""

import functools
import json
import random
import statistics
import tomllib

from protocol import airtime, frame, lorapack, senml, serial_link
from simulators.mpyrun import REPO

T0 = 1767225600            # 2026-01-01T00:00:00Z: the simulated day's first reading
BOOT_EPOCH = 7
DEVICE_KEY = bytes(range(16))
FRAME_BATCH = 16           # FramedLink.max_batch_records default (firmware/app/links/framed.py)
DR_LIMITS = tuple((dr, airtime.max_app_payload(dr)) for dr in (0, 5))  # 51 and 222 B
PACK_DR, PACK_LIMIT = DR_LIMITS[1]
PROFILE_DIR = REPO / "hardware" / "profiles"

# Cayenne LPP: quantity -> (type, data bytes, multiplier, signed). Each value costs a channel
# byte + a type byte + data, MSB first. Type codes, sizes and multipliers: ElectronicCats/
# CayenneLPP src/CayenneLPP.h (commit e3defd7, the "extended data types" of myDevices' LPP);
# 103/104/2 are myDevices' original IPSO-based types. There is no NO2 type: analog input.
LPP_TYPES = {
    "co2_ppm": (125, 2, 1, False),        # LPP_CONCENTRATION, 1 ppm unsigned
    "temperature_c": (103, 2, 10, True),  # LPP_TEMPERATURE, 0.1 °C signed
    "rh_percent": (104, 1, 2, False),     # LPP_RELATIVE_HUMIDITY, 0.5 % unsigned
    "no2_ppb": (2, 2, 100, True),         # LPP_ANALOG_INPUT, 0.01 signed
    "distance_cm": (130, 4, 10, False),   # LPP_DISTANCE, 0.001 m unsigned: cm × 10
    "fill_ratio": (120, 1, 100, False),   # LPP_PERCENTAGE, 1 % unsigned: ratio × 100
    "battery_v": (116, 2, 100, False),    # LPP_VOLTAGE, 0.01 V unsigned
}
LPP_UNIXTIME = (133, 4, 1, False)         # LPP_UNIXTIME, 4 bytes unsigned


def lpp_encode(values, t=None, channel=1):
    """Cayenne LPP bytes for ``[[quantity, value, flag], ...]``, value i on channel
    ``channel + i``, then the time ``t`` (Unix s) on the next channel when given. A value of
    None (LPP cannot say "failed") is left out. Raises ``ValueError`` for a quantity with no
    LPP type or a value outside its type's range."""
    out = bytearray()
    items = [(q, v) for q, v, _ in values if v is not None]
    if t is not None:
        items.append((None, t))
    for i, (q, v) in enumerate(items):
        code, size, mult, signed = LPP_UNIXTIME if q is None else _lpp_type(q)
        try:
            data = int(round(v * mult)).to_bytes(size, "big", signed=signed)
        except OverflowError:
            raise ValueError("%s value %r is outside Cayenne LPP type %d" % (q or "t", v, code))
        out += bytes((channel + i, code)) + data
    return bytes(out)


def _lpp_type(q):
    entry = LPP_TYPES.get(q)
    if entry is None:
        raise ValueError("quantity %r has no Cayenne LPP type" % (q,))
    return entry


# ---- the readings ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def profile(name):
    """``hardware/profiles/<name>.toml`` as a dict."""
    with open(PROFILE_DIR / ("%s.toml" % name), "rb") as f:
        return tomllib.load(f)


@functools.lru_cache(maxsize=None)
def records(name, days=1.0, battery=False):
    """The reading dicts of ``days`` simulated days of profile ``name`` (seed 1); with
    ``battery``, each also carries ``battery_v`` (3.0 V read in 10 mV steps with ±10 mV of
    seeded noise: an assumption, REFERENCE gives no ADC figure). A tuple: do not mutate."""
    from simulators import daysim  # here, not at the top: `civicedge` imports this module

    by_t = {}
    for s in daysim.run_day(name, seed=1, duration_s=int(days * daysim.DAY_S)):
        by_t.setdefault(s.t_s, []).append([s.quantity, s.reading, "ok"])
    cycles = [(int(t), by_t[t]) for t in sorted(by_t)]
    prof = profile(name)["profile"]
    k = (prof.get("mean_period_s") or 0) // prof["interval_s"]
    if k > 1:  # firmware/app/node.py: the mean of each quantity over k cycles, at the first's t
        cycles = [(group[0][0], _means(group)) for group in
                  (cycles[i:i + k] for i in range(0, len(cycles) - k + 1, k))]
    rng = random.Random(1)
    out = []
    for seq, (t, values) in enumerate(cycles):
        if battery:
            values = values + [["battery_v", round(rng.gauss(3.0, 0.01), 2), "ok"]]
        out.append({"seq": seq, "t": T0 + t, "values": values})
    return tuple(out)


def _means(group):
    sums = {}
    for _, values in group:
        for q, v, _ in values:
            acc = sums.setdefault(q, [0.0, 0])
            acc[0] += v
            acc[1] += 1
    return [[q, total / n, "ok"] for q, (total, n) in sums.items()]


VARIANTS = (  # label, profile, with battery_v
    ("classroom-co2 (CO2, T, RH)", "classroom-co2", False),
    ("classroom-co2 + battery_v (4 values)", "classroom-co2", True),
    ("legionella-outlet (pipe T)", "legionella-outlet", False),
    ("bin-level (distance, fill)", "bin-level", False),
    ("street-no2 (NO2, T; 15-min means)", "street-no2", False),
)
FOUR_VALUES = VARIANTS[1][0]


# ---- encodings -----------------------------------------------------------------------------

def _device(name):
    return profile(name)["profile"]["example_device_id"]


def senml_json(device_id, recs):
    """The same SenML pack as JSON (RFC 8428 labels), compact."""
    pack = senml.to_json_labels(senml.pack_records(device_id, BOOT_EPOCH, list(recs)))
    return json.dumps(pack, separators=(",", ":")).encode()


def node_frame(device_id, recs):
    """The node frame (protocol.frame, 16-byte tag) carrying the SenML-CBOR pack of ``recs``:
    the MQTT payload."""
    payload = senml.encode_pack(device_id, BOOT_EPOCH, list(recs))
    return frame.encode_data(DEVICE_KEY, device_id, BOOT_EPOCH, recs[0]["seq"], len(recs), payload)


def serial_packet(device_id, recs):
    """What the serial link writes: 00 COBS(frame + CRC-32) 00."""
    return serial_link.encode_packet(node_frame(device_id, recs))


def lorawan_uplinks(recs, max_bytes):
    """Greedy uplinks of the LoRaWAN pack: ``[(payload bytes, readings), ...]``."""
    out, i = [], 0
    while i < len(recs):
        payload, n = lorapack.pack(recs[i:], max_bytes, BOOT_EPOCH)
        out.append((len(payload), n))
        i += n
    return out


def _chunks(recs, n):
    return [recs[i:i + n] for i in range(0, len(recs), n)]


def _per_reading(encode, recs, batch):
    """Bytes per reading: messages of ``batch`` readings (1: one message per reading)."""
    return sum(len(encode(c)) for c in _chunks(recs, batch)) / float(len(recs))


def bytes_per_reading(name, battery=False, days=1.0):
    """``{encoding: (one per message, batched)}`` bytes per reading for a profile's day."""
    recs = records(name, days, battery)
    dev = _device(name)
    out = {}
    for key, encode in (("json", lambda c: senml_json(dev, c)), ("serial", lambda c: serial_packet(dev, c)),
                        ("mqtt", lambda c: node_frame(dev, c))):
        out[key] = (_per_reading(encode, recs, 1), _per_reading(encode, recs, FRAME_BATCH))
    single = _per_reading(lambda c: lorapack.pack(c, PACK_LIMIT, BOOT_EPOCH)[0], recs, 1)
    out["lorawan"] = (single, sum(b for b, _ in lorawan_uplinks(recs, PACK_LIMIT)) / float(len(recs)))
    lpp = sum(len(lpp_encode(r["values"], r["t"])) for r in recs) / float(len(recs))
    out["lpp"] = (lpp, lpp)
    return out


ENCODINGS = (("json", "SenML JSON (baseline)"),
             ("serial", "serial: SenML-CBOR in a node frame, COBS + CRC-32"),
             ("mqtt", "MQTT: SenML-CBOR in a node frame"),
             ("lorawan", "LoRaWAN pack (batch: DR5 uplinks of 222 B)"),
             ("lpp", "Cayenne LPP + unixtime channel"))


def bench_bytes(days=1.0):
    rows, four = [], None
    for label, name, battery in VARIANTS:
        figures = bytes_per_reading(name, battery, days)
        base = figures["json"][1]
        for key, enc in ENCODINGS:
            one, batched = figures[key]
            rows.append((label, enc, "%.1f" % one, "%.1f" % batched, "%.3f" % (batched / base)))
        if label == FOUR_VALUES:
            four = figures["lorawan"][1]
            dr0 = lorawan_uplinks(records(name, days, battery), DR_LIMITS[0][1])
            four_dr0 = sum(b for b, _ in dr0) / float(len(records(name, days, battery)))
    notes = [
        "**Goal: a 4-value reading at most 16 bytes on average in a batch (LoRaWAN pack): %s** — "
        "%.1f B per reading in DR5 uplinks, %.1f B in DR0 uplinks (51 B)." % (
            "met" if max(four, four_dr0) <= 16 else "NOT met", four, four_dr0),
        "Batched: serial and MQTT frames of %d readings (the framed links' `max_batch_records` "
        "default, as when a backlog is sent), LoRaWAN uplinks filled to 222 B (DR5), SenML JSON "
        "in packs of %d. One per message: what a node sends each wake when its link is up. The "
        "node frame carries a 16-byte HMAC tag and the device id (`protocol/frame.py`); MQTT "
        "packet headers and topic are not counted. SenML carries each value exactly as the driver "
        "produced it (SCD4x temperature and humidity need a float64); the pack at its wire "
        "resolution (1/128 °C, 0.1 %%RH, 1 ppm, 1 cm, 0.001 fill); Cayenne LPP at its coarser "
        "one (0.1 °C, 0.5 %%RH, 1 %% fill) and with a 6-byte unixtime channel per reading, "
        "without which readings batched in one payload cannot be told apart. Status records "
        "are not included." % (FRAME_BATCH, FRAME_BATCH),
        "LPP type codes: ElectronicCats/CayenneLPP `src/CayenneLPP.h` (concentration 125, "
        "temperature 103, humidity 104, analog input 2 for NO2, distance 130, percentage 120, "
        "voltage 116, unixtime 133)."]
    return ("Bytes per reading on each link for the same readings (one simulated day per profile "
            "through the real drivers), ratio to SenML JSON", rows, notes)


# ---- uplink --------------------------------------------------------------------------------

UPLINK_DAYS = {"classroom-co2": 1, "legionella-outlet": 2, "bin-level": 7, "street-no2": 7}


def readings_per_uplink(name, battery, max_bytes, days):
    """``(median, min)`` readings per full pack uplink (the last, partial one left out; all
    of them if there is only one) and Cayenne LPP's readings per uplink of ``max_bytes``."""
    recs = records(name, days, battery)
    counts = [n for _, n in lorawan_uplinks(recs, max_bytes)]
    full = counts[:-1] or counts
    lpp_sizes = sorted(len(lpp_encode(r["values"], r["t"])) for r in recs)
    return statistics.median(full), min(full), max_bytes // lpp_sizes[-1]


def bench_uplink(days=None):
    rows, worst = [], []
    for label, name, battery in VARIANTS:
        d = days if days is not None else UPLINK_DAYS[name]
        for dr, limit in DR_LIMITS:
            med, low, lpp = readings_per_uplink(name, battery, limit, d)
            rows.append((label, "DR%d (%d B)" % (dr, limit), "%g" % d, "%g (%d)" % (med, low), "%d" % lpp,
                         "%.1f (%.1f)" % (med / lpp, low / float(lpp))))
            worst.append((med / float(lpp), low / float(lpp), label, dr))
    med = min(worst, key=lambda x: x[0])
    low = min(worst, key=lambda x: x[1])
    notes = ["**Goal: at least 3× Cayenne LPP's density in a LoRaWAN uplink: %s** — the median "
             "uplink holds at least %.1f× LPP's readings in every row (lowest: %s, DR%d). Not in "
             "every single uplink: the fewest readings a full uplink held is %.1f× LPP's (%s, DR%d)%s." % (
                 "met" if med[0] >= 3 else "NOT met", med[0], med[2], med[3], low[1], low[2], low[3],
                 "" if low[1] >= 3 else ": while a room fills or empties CO2 moves 64 ppm or more "
                 "between readings, and each such delta takes 2 bytes"),
             "Pack: the median full uplink (and, in brackets, the fewest readings any full uplink "
             "held; the last, partial uplink is left out) over the days simulated. Cayenne LPP: "
             "whole readings of values + unixtime per uplink. Ratio: pack ÷ LPP, median (worst)."]
    return ("Readings per LoRaWAN uplink at DR0 (SF12, 51 B) and DR5 (SF7, 222 B): the pack "
            "(`protocol/lorapack.py`) against Cayenne LPP", rows, notes)
