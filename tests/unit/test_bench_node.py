"""The node benchmarks (``scripts/bench bytes uplink energy``) produce sane rows: the Cayenne
LPP encoder against published examples, the reading dicts built from the day simulation,
and each benchmark's table and goal notes on a short simulated run (no timings)."""

import pytest

from protocol import lorapack, senml
from protocol.lorapack_decode import unpack
from simulators import bench, bench_node, bench_node_energy, energy
from simulators.bench_node import lpp_encode


def test_lpp_published_examples():
    # OndrejKnebl/CayenneLPP README: channel 1, temperature 25.5 °C -> 01 67 00 FF.
    assert lpp_encode([["temperature_c", 25.5, "ok"]]) == bytes.fromhex("016700ff")
    # TTN (lorawan-stack-docs, CayenneLPP formatter): 03 67 01 10 05 67 00 FF is
    # temperature_3 27.2 and temperature_5 25.5.
    assert lpp_encode([["temperature_c", 27.2, "ok"]], channel=3) + \
        lpp_encode([["temperature_c", 25.5, "ok"]], channel=5) == bytes.fromhex("03670110056700ff")


def test_lpp_types_sizes_and_time_channel():
    values = [["co2_ppm", 612, "ok"], ["temperature_c", -4.1, "ok"], ["rh_percent", 41.5, "ok"],
              ["battery_v", 3.01, "ok"]]
    out = lpp_encode(values, t=1767225600)
    assert out == bytes.fromhex("017d0264" "0267ffd7" "036853" "0474012d"
                                + "0585" + (1767225600).to_bytes(4, "big").hex())
    # a failed sensor's None is left out; distance in mm, fill in %
    assert lpp_encode([["distance_cm", 61, "ok"], ["fill_ratio", None, "sensor_failed"]]) == \
        bytes.fromhex("018200000262")
    with pytest.raises(ValueError, match="uptime_s"):
        lpp_encode([["uptime_s", 5, "ok"]])
    with pytest.raises(ValueError, match="outside"):
        lpp_encode([["co2_ppm", 70000, "ok"]])


def test_records_are_issue3_readings():
    recs = bench_node.records("classroom-co2", 0.25, True)
    assert len(recs) == 0.25 * 86400 // 120
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert all(b["t"] - a["t"] == 120 for a, b in zip(recs, recs[1:]))
    assert [v[0] for v in recs[0]["values"]] == ["co2_ppm", "temperature_c", "rh_percent", "battery_v"]
    assert all(f == "ok" for r in recs for _, _, f in r["values"])
    senml.encode_pack("sch1-rm12-co2", 7, list(recs))  # valid records for the SenML profile
    # street NO2 logs 15-minute means of its 1-minute samples
    street = bench_node.records("street-no2", 0.25)
    assert len(street) == 0.25 * 86400 // 900
    assert all(b["t"] - a["t"] == 900 for a, b in zip(street, street[1:]))


def test_lorawan_uplinks_round_trip_and_fit():
    recs = bench_node.records("legionella-outlet", 0.25)
    ups = bench_node.lorawan_uplinks(recs, 51)
    assert sum(n for _, n in ups) == len(recs) and all(b <= 51 for b, _ in ups)
    payload, n = lorapack.pack(list(recs), 51, bench_node.BOOT_EPOCH)
    assert unpack(payload)[1][0]["seq"] == 0 and n == ups[0][1]


def _cells(rows, label, enc):
    return [r for r in rows if r[0] == label and r[1] == enc][0]


def test_bench_bytes_rows():
    title, rows, notes = bench_node.bench_bytes(days=0.25)
    assert len(rows) == len(bench_node.VARIANTS) * len(bench_node.ENCODINGS)
    assert all(len(r) == len(bench.HEADERS["bytes"]) for r in rows)
    for label, _, _ in bench_node.VARIANTS:
        json_row = _cells(rows, label, "SenML JSON (baseline)")
        assert json_row[4] == "1.000"
        serial = _cells(rows, label, bench_node.ENCODINGS[1][1])
        mqtt = _cells(rows, label, bench_node.ENCODINGS[2][1])
        pack = _cells(rows, label, bench_node.ENCODINGS[3][1])
        lpp = _cells(rows, label, bench_node.ENCODINGS[4][1])
        # a frame under 254 bytes: COBS adds 1 byte, the CRC 4, the delimiters 2
        assert float(serial[2]) - float(mqtt[2]) == pytest.approx(7.0)
        assert float(pack[3]) < float(lpp[3]) < float(mqtt[3]) < float(json_row[3])
        assert float(pack[3]) < float(pack[2])  # batching pays
    assert any(n.startswith("**Goal: a 4-value reading") for n in notes)


def test_bench_uplink_rows():
    title, rows, notes = bench_node.bench_uplink(days=0.5)
    assert len(rows) == 2 * len(bench_node.VARIANTS)
    for row in rows:
        lpp = int(row[4])
        assert lpp >= 1 and float(row[3].split()[0]) > lpp
    legionella = [r for r in rows if r[0].startswith("legionella") and r[1] == "DR0 (51 B)"][0]
    assert legionella[4] == "5"  # 10 bytes per LPP reading (temperature + unixtime)
    assert notes[0].startswith("**Goal: at least 3×")


def test_bench_energy_rows():
    title, rows, notes = bench_node_energy.bench_energy()
    assert all(len(r) == len(bench.HEADERS["energy"]) for r in rows)
    assert rows[0][0].startswith("REFERENCE §5 example B") and rows[0][-1] == "1.00"
    base = energy.example_b()
    assert rows[0][3] == "%.1f mAs" % base.charge_mas
    legionella = [r for r in rows if r[0] == "legionella-outlet"]
    charges = [float(r[3].split()[0]) for r in legionella]
    # before (awake, every wake) > light sleep only > as built (batched) > no uplink at all
    assert charges[2] > charges[3] > charges[0] > charges[4]
    assert legionella[0][1].startswith("as built") and "5-reading uplink" in legionella[0][1]
    verdicts = [n for n in notes if n.startswith("**Goal: legionella") or n.startswith("**Goal: bin")]
    assert len(verdicts) == 2
    assert all(("NOT met" in v) == (float(v.split("— ")[1].split()[0]) < 5) for v in verdicts)


def test_markdown_section_with_notes():
    text = bench._markdown("uplink", "A title", [tuple("abcdef")], ["a note"])
    assert text.startswith("## uplink\n") and "| a | b | c | d | e | f |" in text
    assert text.rstrip().endswith("a note")


def test_heap_bisection_finds_the_least_passing_heap_to_its_step():
    from simulators import bench_heap

    need = 150 * 1024 + 5
    got = bench_heap._least(lambda heap: heap >= need)
    assert need <= got < need + bench_heap.STEP
    assert bench_heap._least(lambda heap: False) is None
