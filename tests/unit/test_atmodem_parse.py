"""Reply parsing of the AT-command LoRaWAN modems (REFERENCE.md §6.4, both dialects), the
sans-IO uplink collector on recorded transcripts, key redaction, and the serial line
reader of ``drivers.port`` on a byte-level fake port."""

import errno

import pytest

from drivers.atmodem import (
    EV_BUSY, EV_CONFIRMED, EV_DONE, EV_DOWNLINK, EV_DUTY_CYCLE, EV_ECHO, EV_EMPTY, EV_ERROR, EV_INFO,
    EV_JOIN_FAILED, EV_JOINED, EV_NOT_CONFIRMED, EV_NOT_JOINED, EV_OK, EV_REBOOT, EV_RX_INFO,
    EV_TX_DONE, EV_UNKNOWN, EV_VALUE, ModemError, SendResult, parse_line, redact, send_collector)
from drivers.port import LineError, discard_input, read_line, write_line
from simulators.clock import VirtualClock

RAK = "rak3172"
E5 = "lora-e5"


# -- RAK3172 / RUI3 -----------------------------------------------------------------------------
@pytest.mark.parametrize("line, kind, error", [
    ("OK", EV_OK, None),
    ("AT_ERROR", EV_ERROR, "generic"),
    ("AT_PARAM_ERROR", EV_ERROR, "param"),
    ("AT_BUSY_ERROR", EV_BUSY, None),
    ("AT_TEST_PARAM_OVERFLOW", EV_ERROR, "overflow"),
    ("AT_NO_NETWORK_JOINED", EV_NOT_JOINED, None),
    ("AT_RX_ERROR", EV_ERROR, "rx"),
    ("AT_DUTYCYCLE_RESTRICTED", EV_DUTY_CYCLE, None),
    ("AT_DUTYCYLE_RESTRICTED", EV_DUTY_CYCLE, None),  # RAK's older status-table spelling
])
def test_rak_status_lines(line, kind, error):
    ev = parse_line(RAK, line)
    assert (ev.kind, ev.error) == (kind, error)


@pytest.mark.parametrize("line, kind, value", [
    ("+EVT:JOINED", EV_JOINED, None),
    ("+EVT:JOIN_FAILED_RX_TIMEOUT", EV_JOIN_FAILED, "JOIN_FAILED_RX_TIMEOUT"),
    ("+EVT:TX_DONE", EV_TX_DONE, None),
    ("+EVT:SEND_CONFIRMED_OK", EV_CONFIRMED, None),
    ("+EVT:SEND_CONFIRMED_FAILED(4)", EV_NOT_CONFIRMED, 4),
    ("+EVT:SEND CONFIRMED OK", EV_CONFIRMED, None),  # "some fw spell with spaces"
    ("+EVT:SEND CONFIRMED FAILED(4)", EV_NOT_CONFIRMED, 4),
    ("+EVT:SEND_CONFIRMED_FAILED", EV_NOT_CONFIRMED, None),
])
def test_rak_events(line, kind, value):
    ev = parse_line(RAK, line)
    assert (ev.kind, ev.value) == (kind, value)


def test_rak_downlink_event_fields():
    ev = parse_line(RAK, "+EVT:RX_1:-70:8:UNICAST:1:1234")
    assert ev.kind == EV_DOWNLINK
    assert (ev.window, ev.rssi, ev.snr, ev.value, ev.port, ev.payload) == ("1", -70, 8, "UNICAST", 1, b"\x12\x34")
    ev = parse_line(RAK, b"+EVT:RX_2:-112:-3:UNICAST:200:\r\n".strip())
    assert (ev.window, ev.rssi, ev.snr, ev.port, ev.payload) == ("2", -112, -3, 200, b"")


@pytest.mark.parametrize("line", [
    "+EVT:RX_1:-70:8:UNICAST:1:123",  # odd hex
    "+EVT:RX_1:-70:8:UNICAST:1:12G4",  # not hex
    "+EVT:RX_1:loud:8:UNICAST:1:1234",  # RSSI not a number
    "+EVT:RX_1:-70:8:UNICAST:1",  # a field missing
    "+EVT:RX_1:-70:8:UNICAST:300:12",  # port out of range
    "+EVT:SEND_CONFIRMED_FAILED(x)",
])
def test_rak_garbled_known_events_raise_modem_error_naming_the_line(line):
    with pytest.raises(ModemError) as e:
        parse_line(RAK, line)
    assert e.value.reply == line


def test_rak_values_echo_banner_and_garbage():
    assert (parse_line(RAK, "1").kind, parse_line(RAK, "1").value) == (EV_VALUE, "1")  # AT+NJS=? joined
    ev = parse_line(RAK, "AT+NJS=1")  # RUI3 4.x read-reply form
    assert (ev.kind, ev.cmd, ev.value) == (EV_VALUE, "NJS", "1")
    assert parse_line(RAK, "AT+NJS=?").kind == EV_ECHO
    assert parse_line(RAK, "AT").kind == EV_ECHO
    assert parse_line(RAK, "Current Work Mode: LoRaWAN.").kind == EV_REBOOT
    assert parse_line(RAK, "").kind == EV_EMPTY
    assert parse_line(RAK, b"O\xffK").kind == EV_UNKNOWN
    assert parse_line(RAK, b"\x00").kind == EV_UNKNOWN
    assert parse_line(RAK, "+EVT:LINKCHECK:0:0:1:-80:7").kind == EV_INFO


# -- Seeed LoRa-E5 ----------------------------------------------------------------------------
@pytest.mark.parametrize("line, kind, cmd, value", [
    ("+AT: OK", EV_OK, "AT", None),
    ("+ID: DevAddr, 26:01:5F:66", EV_VALUE, "ID", "DevAddr, 26:01:5F:66"),
    ("+ID: DevEui, 2C:F7:F1:20:24:90:03:63", EV_VALUE, "ID", "DevEui, 2C:F7:F1:20:24:90:03:63"),
    ("+ID: AppEui, 80:00:00:00:00:00:00:06", EV_VALUE, "ID", "AppEui, 80:00:00:00:00:00:00:06"),
    ("+KEY: APPKEY 2B7E151628AED2A6ABF7158809CF4F3C", EV_VALUE, "KEY", "APPKEY 2B7E151628AED2A6ABF7158809CF4F3C"),
    ("+DR: EU868", EV_VALUE, "DR", "EU868"),
    ("+DR: EU868 DR0  SF12 BW125K", EV_VALUE, "DR", "EU868 DR0  SF12 BW125K"),
    ("+CH: NUM, 0-2", EV_VALUE, "CH", "NUM, 0-2"),
    ("+MODE: LWOTAA", EV_VALUE, "MODE", "LWOTAA"),
    ("+NJS: 1", EV_VALUE, "NJS", "1"),
    ("+JOIN: Start", EV_INFO, "JOIN", "Start"),
    ("+JOIN: NORMAL", EV_INFO, "JOIN", "NORMAL"),
    ("+JOIN: Network joined", EV_JOINED, "JOIN", None),
    ("+JOIN: NetID 000013 DevAddr 26:01:5F:66", EV_INFO, "JOIN", "NetID 000013 DevAddr 26:01:5F:66"),
    ("+JOIN: Done", EV_DONE, "JOIN", None),
    ("+JOIN: Join failed", EV_JOIN_FAILED, "JOIN", None),
    ("+JOIN: Joined already", EV_JOINED, "JOIN", "already"),
    ("+MSGHEX: Start", EV_INFO, "MSGHEX", "Start"),
    ("+MSGHEX: FPENDING", EV_INFO, "MSGHEX", "FPENDING"),
    ("+MSGHEX: Done", EV_DONE, "MSGHEX", None),
    ("+CMSGHEX: Wait ACK", EV_INFO, "CMSGHEX", "Wait ACK"),
    ("+CMSGHEX: ACK Received", EV_CONFIRMED, "CMSGHEX", None),
    ("+MSGHEX: Please join network first", EV_NOT_JOINED, "MSGHEX", None),
    ("Please join network first", EV_NOT_JOINED, None, None),
    ("+MSGHEX: LoRaWAN modem is busy", EV_BUSY, "MSGHEX", None),
    ("+MSGHEX: No free channel", EV_DUTY_CYCLE, "MSGHEX", None),
    ("+INFO: Input timeout", EV_INFO, "INFO", "Input timeout"),
])
def test_e5_lines(line, kind, cmd, value):
    ev = parse_line(E5, line)
    assert (ev.kind, ev.cmd, ev.value) == (kind, cmd, value)


def test_e5_rx_window_line():
    ev = parse_line(E5, "+MSGHEX: RXWIN2, RSSI -112, SNR -1.0")
    assert (ev.kind, ev.window, ev.rssi, ev.snr) == (EV_RX_INFO, "2", -112, -1.0)


def test_e5_downlink_lines():
    ev = parse_line(E5, '+CMSGHEX: PORT: 2; RX: "3E9999010101"')
    assert (ev.kind, ev.port, ev.payload) == (EV_DOWNLINK, 2, bytes.fromhex("3E9999010101"))
    ev = parse_line(E5, '+CMSG: PORT: 5; RX: "14 54 54"')  # RisingHF's spaced form
    assert (ev.port, ev.payload) == (5, b"\x14\x54\x54")


def test_e5_refusals_and_errors():
    ev = parse_line(E5, "+MSGHEX: No band in 13469ms")
    assert (ev.kind, ev.wait_ms) == (EV_DUTY_CYCLE, 13469)
    ev = parse_line(E5, "+MSGHEX: Length error 51")
    assert (ev.kind, ev.error, ev.value) == (EV_ERROR, "length", 51)
    ev = parse_line(E5, "+KEY: ERROR(-1)")
    assert (ev.kind, ev.cmd, ev.error, ev.value) == (EV_ERROR, "KEY", "param", -1)
    assert parse_line(E5, "+MODE: ERROR(-12)").error == "mode"
    assert parse_line(E5, "+AT: ERROR(-10)").error == "unknown_command"
    assert parse_line(E5, "+JOIN: Not in OTAA mode").error == "mode"


@pytest.mark.parametrize("line", [
    '+MSGHEX: PORT: 2; RX: "3E9"',  # odd hex
    '+MSGHEX: PORT: x; RX: "3E99"',
    "+MSGHEX: PORT: 2 RX 3E99",
    "+MSGHEX: RXWIN1, RSSI -84",
    "+MSGHEX: RXWIN1, RSSI loud, SNR 6.0",
    "+MSGHEX: No band in soonms",
    "+KEY: ERROR(x)",
])
def test_e5_garbled_known_lines_raise_modem_error(line):
    with pytest.raises(ModemError):
        parse_line(E5, line)


def test_e5_unknown_text():
    assert parse_line(E5, "OK").kind == EV_UNKNOWN
    assert parse_line(E5, "+MSGHEX: something new").kind == EV_UNKNOWN
    assert parse_line(E5, b"+DR: \x9bEU868").kind == EV_UNKNOWN


def test_unknown_dialect_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="dialect"):
        parse_line("rn2483", "ok")


# -- one uplink, folded from a recorded transcript ---------------------------------------------
def _fold(dialect, confirmed, lines):
    col = send_collector(dialect, confirmed)
    done_at = None
    for i, line in enumerate(lines):
        if col.feed(parse_line(dialect, line)) and done_at is None:
            done_at = i
    return col, done_at


def test_e5_multiline_downlink_transcript():
    col, done_at = _fold(E5, False, [
        "+MSGHEX: Start", "+MSGHEX: FPENDING", '+MSGHEX: PORT: 1; RX: "48656C6C6F"',
        "+MSGHEX: RXWIN2, RSSI -112, SNR -1.0", "+MSGHEX: Done"])
    r = col.result()
    assert done_at == 4 and r.status == SendResult.SENT and r.transmitted
    dl = r.downlink
    assert (dl.port, dl.payload, dl.rssi, dl.snr, dl.window) == (1, b"Hello", -112, -1.0, "2")


def test_e5_confirmed_transcripts():
    col, _ = _fold(E5, True, [  # Seeed forum capture, LoRa-E5-HF
        "+CMSGHEX: Start", "+CMSGHEX: Wait ACK", "+CMSGHEX: FPENDING", "+CMSGHEX: ACK Received",
        '+CMSGHEX: PORT: 15; RX: "48656C6C6F"', "+CMSGHEX: RXWIN1, RSSI -43, SNR 10.0", "+CMSGHEX: Done"])
    r = col.result()
    assert r.status == SendResult.CONFIRMED
    assert (r.downlink.port, r.downlink.payload, r.downlink.rssi, r.downlink.snr) == (15, b"Hello", -43, 10.0)
    col, _ = _fold(E5, True, ["+CMSGHEX: Start", "+CMSGHEX: Wait ACK", "+CMSGHEX: Done"])
    assert col.result().status == SendResult.NOT_CONFIRMED and col.result().downlink is None


def test_e5_rx_window_without_payload_reports_signal_but_no_downlink():
    col, _ = _fold(E5, False, ["+MSGHEX: Start", "+MSGHEX: RXWIN2, RSSI -112, SNR -1.0", "+MSGHEX: Done"])
    r = col.result()
    assert r.downlink is None and (r.rssi, r.snr) == (-112, -1.0)


def test_rak_transcripts():
    col, done_at = _fold(RAK, False, ["+EVT:TX_DONE", "+EVT:RX_1:-70:8:UNICAST:1:1234"])
    assert done_at == 0 and col.linger is False
    r = col.result()
    assert r.status == SendResult.SENT and (r.downlink.port, r.downlink.payload) == (1, b"\x12\x34")
    col, _ = _fold(RAK, True, ["+EVT:SEND_CONFIRMED_OK"])
    assert col.result().status == SendResult.CONFIRMED and col.linger  # a downlink may follow
    col, _ = _fold(RAK, True, ["+EVT:SEND_CONFIRMED_FAILED(4)"])
    assert col.result().status == SendResult.NOT_CONFIRMED and not col.result().downlink


@pytest.mark.parametrize("dialect, line, status, wait", [
    (RAK, "AT_DUTYCYCLE_RESTRICTED", SendResult.DUTY_CYCLE, None),
    (RAK, "AT_NO_NETWORK_JOINED", SendResult.NOT_JOINED, None),
    (RAK, "AT_BUSY_ERROR", SendResult.BUSY, None),
    (E5, "+MSGHEX: No band in 2500ms", SendResult.DUTY_CYCLE, 2500),
    (E5, "+MSGHEX: Please join network first", SendResult.NOT_JOINED, None),
    (E5, "+MSGHEX: LoRaWAN modem is busy", SendResult.BUSY, None),
])
def test_refusals_are_results_not_errors(dialect, line, status, wait):
    col, _ = _fold(dialect, False, [line])
    r = col.result()
    assert (r.status, r.wait_ms, r.transmitted) == (status, wait, False)


# -- redaction -----------------------------------------------------------------------------------
KEY = "2B7E151628AED2A6ABF7158809CF4F3C"


@pytest.mark.parametrize("text", [
    "AT+APPKEY=" + KEY, 'AT+KEY=APPKEY,"%s"' % KEY, "+KEY: APPKEY " + KEY, KEY.lower(),
    "reply %s garbled" % KEY,
])
def test_redact_removes_the_key(text):
    out = redact(text, KEY)
    assert KEY not in out.upper() and "<redacted>" in out


def test_redact_keeps_ordinary_lines():
    assert redact("AT+SEND=2:01F4", KEY) == "AT+SEND=2:01F4"
    assert redact("+KEY: ERROR(-1)", KEY) == "+KEY: ERROR(-1)"
    assert KEY[4:30] not in redact("b'+KEY: APPKEY %s\\x9b%s'" % (KEY[:10], KEY[11:]))
    assert redact("+ID: DevEui, 2C:F7:F1:20:24:90:03:63") == "+ID: DevEui, 2C:F7:F1:20:24:90:03:63"


# -- drivers.port on a byte-level fake ----------------------------------------------------------
class FakePort:
    """Gives its bytes ``chunk`` at a time; ``read`` returns b"" when empty (like pyserial)."""

    def __init__(self, data=b"", chunk=1, write_limit=None):
        self.data = bytearray(data)
        self.chunk = chunk
        self.written = bytearray()
        self.write_limit = write_limit

    def read(self, n):
        n = min(n, self.chunk)
        out = bytes(self.data[:n])
        del self.data[:n]
        return out

    def write(self, buf):
        buf = bytes(buf)
        if self.write_limit is not None:
            buf = buf[:self.write_limit]
        self.written += buf
        return len(buf)


def test_read_line_takes_crlf_and_lf_lines():
    clock = VirtualClock()
    port = FakePort(b"OK\r\n\r\n+EVT:TX_DONE\nrest")
    assert read_line(port, clock, 100) == b"OK"
    assert read_line(port, clock, 100) == b""
    assert read_line(port, clock, 100) == b"+EVT:TX_DONE"
    assert clock.now_us == 0  # data was there: no waiting


def test_read_line_times_out_on_the_injected_clock():
    clock = VirtualClock()
    assert read_line(FakePort(), clock, 100, poll_ms=20) is None
    assert clock.now_us == 100000  # waited exactly the timeout, in poll steps


def test_read_line_bounds_length_and_partial_lines():
    clock = VirtualClock()
    with pytest.raises(LineError) as e:
        read_line(FakePort(b"A" * 300 + b"\r\n"), clock, 100, max_len=256)
    assert e.value.reason == "too long" and len(e.value.data) == 257
    assert read_line(FakePort(b"A" * 256 + b"\r\n"), clock, 100, max_len=256) == b"A" * 256
    with pytest.raises(LineError) as e:
        read_line(FakePort(b"+EVT:TX_"), clock, 100)
    assert e.value.reason == "incomplete" and e.value.data == b"+EVT:TX_"
    assert isinstance(e.value, ValueError)


def test_write_line_and_discard():
    port = FakePort(b"stale\r\nbanner\r\n", chunk=4, write_limit=3)
    write_line(port, "AT+SEND=2:01F4")
    assert bytes(port.written) == b"AT+SEND=2:01F4\r\n"
    assert discard_input(port) == 15 and not port.data


def test_write_line_on_a_port_that_takes_nothing_times_out():
    with pytest.raises(OSError) as e:
        write_line(FakePort(write_limit=0), "AT")
    assert e.value.errno == errno.ETIMEDOUT
