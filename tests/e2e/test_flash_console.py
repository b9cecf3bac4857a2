"""``civicedge console``: log lines pass through, node packets (``protocol.serial_link``)
are verified with the device key and decoded into readings, whatever the chunking; the CLI
reads a real pty."""

import json
import os
import threading
import time
import tty

from civicedge.cmd_flash import ConsoleDecoder, site_keys
from protocol import frame, senml, serial_link
from tests.e2e.test_flash import flash_cli

KEY = bytes(range(16))
DEVICE = "sch1-rm12-co2"
T0 = 1735732800  # 2025-01-01T12:00:00Z
RECORDS = [{"seq": 10, "t": T0, "values": [["co2_ppm", 812, "ok"], ["temperature_c", 21.5, "ok"]]},
           {"seq": 11, "t": T0 + 120, "values": [["co2_ppm", None, "sensor_failed"], ["temperature_c", 21.6, "ok"]]}]


def packet(key=KEY, device=DEVICE):
    payload = senml.encode_pack(device, 3, RECORDS)
    return serial_link.encode_packet(frame.encode_data(key, device, 3, 10, 2, payload))


def stream():
    return (b"ets Jun  8 2016 00:22:57\r\nrst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
            + packet() + b"CONFIG ERROR: config.json: interval_s: must be an int\r\n")


def test_log_lines_and_a_verified_frame_decode_whatever_the_chunking():
    data = stream()
    for size in (1, 3, 64, len(data)):
        decoder = ConsoleDecoder({DEVICE: KEY})
        lines = []
        for i in range(0, len(data), size):
            lines += decoder.feed(data[i:i + size])
        assert lines == [
            "ets Jun  8 2016 00:22:57",
            "rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
            "[frame from sch1-rm12-co2: epoch 3, seq 10..11, verified]",
            "  reading seq 10 2025-01-01 12:00:00Z: co2_ppm=812, temperature_c=21.5",
            "  reading seq 11 2025-01-01 12:02:00Z: co2_ppm=None [sensor_failed], temperature_c=21.6",
            "CONFIG ERROR: config.json: interval_s: must be an int",
        ], size


def test_frames_without_the_key_or_with_a_wrong_tag_are_not_decoded():
    assert ConsoleDecoder({}).feed(packet()) == [
        "[frame from sch1-rm12-co2, %d bytes: no key to verify it (give --site-dir)]" % len(
            frame.encode_data(KEY, DEVICE, 3, 10, 2, senml.encode_pack(DEVICE, 3, RECORDS)))]
    (line,) = ConsoleDecoder({DEVICE: bytes(16)}).feed(packet())
    assert line.startswith("[frame from sch1-rm12-co2 REFUSED: bad_tag")
    # a corrupted packet (CRC) is reported as such, and the stream goes on
    bad = bytearray(packet())
    bad[10] ^= 0x40
    assert ConsoleDecoder({DEVICE: KEY}).feed(bytes(bad) + b"next\n") == [
        "[%d bytes that are not a node packet]" % (len(bad) - 2), "next"]


def test_site_keys_come_from_the_site_secrets(tmp_path):
    d = tmp_path / "secrets" / "devices"
    d.mkdir(parents=True)
    (d / (DEVICE + ".json")).write_text(json.dumps({"device_key_hex": KEY.hex()}))
    (d / "junk.json").write_text("not json")
    assert site_keys(tmp_path) == {DEVICE: KEY}


def test_console_reads_a_serial_port(tmp_path, capsys):
    d = tmp_path / "secrets" / "devices"
    d.mkdir(parents=True)
    (d / (DEVICE + ".json")).write_text(json.dumps({"device_key_hex": KEY.hex()}))
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)

    def node():
        time.sleep(0.3)
        os.write(master, stream())

    t = threading.Thread(target=node)
    t.start()
    try:
        rc = flash_cli("console", "--port", port, "--site-dir", tmp_path, "--seconds", "1.5")
    finally:
        t.join()
        os.close(master)
        os.close(slave)
    out = capsys.readouterr().out
    assert rc == 0
    assert "rst:0x5 (DEEPSLEEP_RESET)" in out
    assert "  reading seq 10 2025-01-01 12:00:00Z: co2_ppm=812, temperature_c=21.5" in out
    assert "CONFIG ERROR: config.json: interval_s: must be an int" in out
