"""Configuration changes by downlink (port 10, ``firmware/app/downlink.py``) end to end: the
built firmware in the MicroPython unix port (``simulators/mpy/board.py``) talking AT commands to
the modem emulator, whose network side (``LoRaWANGatewayStub``) queues the downlinks.

- A light-sleeping (mains) node never boots by itself, so a change used to wait for ever: now
  the cycle that received it sleeps out its interval, restarts the interpreter and the boot
  applies the change, in the same boot epoch (seqs go on, nothing is lost).
- ``max_delay_s`` (``link.lorawan.max_delay_s``, the batching) can be changed by downlink: a
  node sending every wake starts batching; an out-of-range value is rejected and counted.
"""

import json

import cbor2
import pytest

from civicedge import firmware_build as fb
from firmware.app import config as node_config
from firmware.app import downlink
from protocol import quality
from protocol.lorapack_decode import unpack
from simulators.ads1115 import SimADS1115
from simulators.atmodem import ATModemEmulator
from simulators.i2c_server import SimServer
from simulators.lorawan_gateway import LoRaWANGatewayStub
from simulators.mpyrun import REPO, run_micropython
from tests.e2e.nodeharness import parse_summary

DEV_EUI = "70b3d57ed005a1c3"
JOIN_EUI = "70b3d57ed0000000"
KEY = bytes.fromhex("5f1c9a0e7b3d2c48a6e1f0b9d8c7a6e5")
APP_KEY = "a0b1c2d3e4f5061728394a5b6c7d8e9f"
STREET = {"no2_ppb": 42.0, "temperature_c": 11.0}
ELECTRODE = {"electrode": {"zero_algorithm": 1, "noise_ppb": 0.0}, "we": 0, "ae": 1}
PIPE = {"temperature_c": 57.25}


def build(tmp_path, profile, device, sets=(), calibration=None):
    out = tmp_path / "fw"
    fb.build("esp32-devkitc-rak3272s", profile, device, out, calibration=calibration,
             sets=["link.lorawan.dev_eui=" + DEV_EUI, "link.lorawan.join_eui=" + JOIN_EUI] + list(sets))
    (out / "secrets.json").write_text(json.dumps({"device_key_hex": KEY.hex(), "lorawan_app_key_hex": APP_KEY}))
    return out, json.loads((out / "config.json").read_text())


def run(out, tmp_path, devices, board_args, downlinks=(), analog=None):
    """Boot ``out`` against ``devices`` and the RAK3172 emulator; ``downlinks``: (after n
    uplinks, payload) on port 10. Returns (summary, gateway stub, emulator, output)."""
    gw = LoRaWANGatewayStub(port=2)
    for after, payload in downlinks:
        gw.queue_downlink(10, payload, after=after)
    with SimServer() as srv:
        srv.rig.setup(devices)
        srv.analog.update(analog or {})
        with ATModemEmulator("rak3172", clock=srv.rig.clock, network=gw, clock_lock=srv.lock,
                             expected_app_key=APP_KEY) as emu:
            gw.attach(emu)
            args = [str(REPO / "simulators" / "mpy" / "board.py"), "--flash", str(tmp_path / "flash.img"),
                    "--install", str(out), "--rtc-synced"] + list(board_args)
            rc, stdout, err = run_micropython(args, server=srv, timeout_s=300, heapsize="320K",
                                              env={"CIVICEDGE_UART2": emu.port_path})
            assert emu.errors == []
    assert "Traceback" not in stdout + err, stdout + err
    summary = parse_summary(stdout)
    assert summary is not None, stdout + err
    return summary, gw, emu, stdout


def by_key(gw):
    out = {}
    for dev, epoch, rec in gw.records:
        out[(epoch, rec["seq"])] = rec
    return out


def kind(rec):
    return rec.get("kind", "reading")


def test_a_light_sleeping_node_restarts_to_apply_a_change_and_keeps_its_epoch(tmp_path):
    sheet = SimADS1115(0x48, inputs=ELECTRODE, seed=9).electrode_sheet
    (tmp_path / "sheet.json").write_text(json.dumps(sheet))
    out, cfg = build(tmp_path, "street-no2", "aqm-high-st-01", ["status_every_n_cycles=15"],
                     calibration=tmp_path / "sheet.json")
    assert (cfg["power"]["sleep"], cfg["interval_s"], cfg["mean_period_s"]) == ("light", 60, 900)
    devices = [{"model": "ads1115", "address": 0x48, "inputs": ELECTRODE, "truth": STREET, "seed": 9},
               {"model": "tmp117", "address": 0x49, "truth": STREET, "seed": 9}]
    # a mean every 15 min goes up as logged; the 2nd uplink (~30 min) brings 5-minute means
    summary, gw, emu, stdout = run(out, tmp_path, devices, ["--until-s", str(3600 + 300)],
                                   downlinks=[(1, cbor2.dumps({"mean_period_s": 300}))])
    assert summary["end"] == "time", stdout
    assert summary["boots"] == 2 and summary["resets"]["soft_reboot"] == 1, summary  # one restart, no other reset
    recs = by_key(gw)
    assert len({e for e, s in recs}) == 1  # the restart kept the boot epoch
    assert sorted(s for e, s in recs) == list(range(len(recs)))  # seqs contiguous through it
    means = [recs[k] for k in sorted(recs) if kind(recs[k]) == "reading"]
    steps = [b["t"] - a["t"] for a, b in zip(means, means[1:])]
    changed = steps.index(next(s for s in steps if s < 600))
    assert changed >= 1 and all(abs(s - 900) <= 5 for s in steps[:changed]), steps
    assert len(steps[changed + 1:]) >= 4 and all(abs(s - 300) <= 5 for s in steps[changed + 1:]), steps
    for m in means:
        v = {q: (x, f) for q, x, f in m["values"]}
        assert v["no2_ppb"][1] == quality.OK and abs(v["no2_ppb"][0] - STREET["no2_ppb"]) <= 2.0, v
    statuses = [recs[k] for k in sorted(recs) if kind(recs[k]) == "status"]
    last = statuses[-1]
    assert last["counters"]["downlinks_applied"] == 1 and last["counters"]["downlinks"] == 1
    assert ["boot_reason", "restart", "ok"] in last["values"]
    assert emu.joins == 1  # the modem kept its session through the restart


def flash_file(image, name):
    """The text of ``/name`` on a node's littlefs image (None if absent), read by the unix port."""
    code = ("import vfs\nfrom flashdev import FileFlash\nvfs.mount(vfs.VfsLfs2(FileFlash(%r)), '/flash')\n"
            "try:\n    print('FILE', open('/flash/%s').read())\nexcept OSError:\n    print('NOFILE')\n"
            % (str(image), name))
    rc, stdout, err = run_micropython(["-c", code], sim=False, timeout_s=60)
    assert rc == 0, stdout + err
    return None if "NOFILE" in stdout else stdout.split("FILE ", 1)[1]


def test_a_downlink_changes_max_delay_s_and_an_out_of_range_one_is_rejected(tmp_path):
    out, cfg = build(tmp_path, "legionella-outlet", "sch1-kit-hot1",
                     ["interval_s=300", "link.lorawan.max_delay_s=0", "status_every_n_cycles=1000"])
    assert cfg["link"]["lorawan"]["max_delay_s"] == 0 and cfg["power"]["sleep"] == "deep"
    wakes = 18
    summary, gw, emu, stdout = run(
        out, tmp_path, [{"model": "tmp117", "truth": PIPE, "seed": 5}], ["--wakes", str(wakes)],
        downlinks=[(1, cbor2.dumps({"max_delay_s": 100000})),  # beyond 86400: rejected at the next boot
                   (3, cbor2.dumps({"max_delay_s": 1200}))],  # then every 1200 // 300 + 1 = 5th wake sends
        analog={"35": 1.05})
    assert summary["end"] == "wakes", stdout
    recs = by_key(gw)
    assert len([k for k in recs if kind(recs[k]) == "reading"]) <= wakes + 1 and len({e for e, s in recs}) == 1
    sends = [(up.t_s, sum(1 for r in unpack(up.payload)[1] if kind(r) == "reading")) for up in emu.uplinks]
    sends = [(t, n) for t, n in sends if n]
    counts = [n for t, n in sends]
    # every wake sent its reading until the change applied; then one wake in five sent five
    first = counts.index(5)
    assert first >= 3 and counts[:first] == [1] * first and counts[first:] == [5] * (len(counts) - first), counts
    assert len(counts) - first >= 2
    steps = [b[0] - a[0] for a, b in zip(sends[first:], sends[first + 1:])]
    assert all(abs(s - 5 * 300) <= 60 for s in steps), steps
    # the accepted change stays on the flash for every later boot; the rejected one left nothing
    doc = json.loads(flash_file(tmp_path / "flash.img", "overrides.json"))
    assert doc == {"set": {"max_delay_s": 1200}, "base": {"max_delay_s": 0}}, doc


def test_max_delay_s_is_a_lorawan_setting_and_other_links_reject_it():
    board, raw = fb.reference_config(fb.load_profile("classroom-co2"))
    cfg = node_config.validate(raw, "classroom")
    with pytest.raises(downlink.DownlinkError, match="max_delay_s: this node has no link.lorawan section"):
        downlink.merge_change(cfg, None, downlink.parse_change(cbor2.dumps({"max_delay_s": 600})),
                              node_config.validate)
    board, raw = fb.reference_config(fb.load_profile("legionella-outlet"))
    cfg = node_config.validate(raw, "legionella")
    doc, new = downlink.merge_change(cfg, None, downlink.parse_change(cbor2.dumps({"max_delay_s": 7200})),
                                     node_config.validate)
    assert doc == {"set": {"max_delay_s": 7200}, "base": {"max_delay_s": 3600}}
    assert new["link"]["lorawan"]["max_delay_s"] == 7200 and cfg["link"]["lorawan"]["max_delay_s"] == 3600
