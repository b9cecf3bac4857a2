"""Hypothesis: the AT-modem parsers and driver fed arbitrary replies raise only their
documented errors (``ModemError``; ``OSError(ETIMEDOUT)`` for silence), never leak the key,
and decode every well-formed downlink exactly."""

import errno

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.atmodem import ATModem, Event, ModemError, SendResult, parse_line, send_collector
from simulators.clock import VirtualClock

DIALECTS = ("rak3172", "lora-e5")
KEY = "2B7E151628AED2A6ABF7158809CF4F3C"
PREFIXES = ["", "OK", "AT_", "AT+", "AT+NJS=", "+EVT:", "+EVT:RX_1:", "+EVT:RX_2:-70:",
            "+EVT:SEND_CONFIRMED_FAILED(", "+EVT:JOIN", "Current Work Mode", "+AT: ", "+MSGHEX: ",
            "+MSGHEX: PORT: ", "+CMSGHEX: RXWIN", "+MSGHEX: No band in ", "+MSGHEX: Length error",
            "+KEY: ERROR(", "+JOIN: ", "+DR: ", "+ID: DevEui, ", "+NJS: "]
line_bytes = st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b)
line_text = st.builds(lambda p, t: p + t, st.sampled_from(PREFIXES),
                      st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))


def _parses_or_modem_error(dialect, line):
    try:
        ev = parse_line(dialect, line)
    except ModemError as e:
        assert isinstance(e.reply, str)
        return None
    assert isinstance(ev, Event) and isinstance(ev.kind, str)
    return ev


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DIALECTS), st.one_of(line_bytes, line_text))
def test_any_reply_line_parses_or_raises_only_modem_error(dialect, line):
    _parses_or_modem_error(dialect, line)


@settings(max_examples=200, deadline=None)
@given(port=st.integers(1, 223), payload=st.binary(max_size=242), rssi=st.integers(-140, 0),
       snr10=st.integers(-200, 150), window=st.sampled_from([1, 2]), confirmed=st.booleans())
def test_e5_downlink_transcripts_decode_exactly(port, payload, rssi, snr10, window, confirmed):
    name = "CMSGHEX" if confirmed else "MSGHEX"
    lines = ["+%s: Start" % name] + (["+%s: Wait ACK" % name, "+%s: ACK Received" % name] if confirmed else [])
    lines += ['+%s: PORT: %d; RX: "%s"' % (name, port, payload.hex().upper()),
              "+%s: RXWIN%d, RSSI %d, SNR %.1f" % (name, window, rssi, snr10 / 10), "+%s: Done" % name]
    col = send_collector("lora-e5", confirmed)
    assert [col.feed(parse_line("lora-e5", line)) for line in lines][-1] is True
    r = col.result()
    assert r.status == (SendResult.CONFIRMED if confirmed else SendResult.SENT)
    dl = r.downlink
    assert (dl.port, dl.payload, dl.rssi, dl.snr, dl.window) == (port, payload, rssi, snr10 / 10, str(window))


@settings(max_examples=200, deadline=None)
@given(port=st.integers(1, 223), payload=st.binary(max_size=242), rssi=st.integers(-140, 0),
       snr=st.integers(-20, 15), window=st.sampled_from("12BC"))
def test_rak_downlink_events_decode_exactly(port, payload, rssi, snr, window):
    ev = parse_line("rak3172", "+EVT:RX_%s:%d:%d:UNICAST:%d:%s" % (window, rssi, snr, port, payload.hex()))
    assert (ev.port, ev.payload, ev.rssi, ev.snr, ev.window) == (port, payload, rssi, snr, window)


# -- the whole driver against a modem that answers anything --------------------------------------
REALISTIC = [b"OK", b"AT_ERROR", b"AT_BUSY_ERROR", b"AT_DUTYCYCLE_RESTRICTED", b"AT_NO_NETWORK_JOINED",
             b"1", b"0", b"5", b"+EVT:JOINED", b"+EVT:JOIN_FAILED_RX_TIMEOUT", b"+EVT:TX_DONE",
             b"+EVT:SEND_CONFIRMED_OK", b"+EVT:SEND_CONFIRMED_FAILED(4)", b"+EVT:RX_1:-70:8:UNICAST:1:1234",
             b"Current Work Mode: LoRaWAN.", b"+AT: OK", b"+MODE: LWOTAA", b"+DR: EU868 DR5  SF7 BW125K",
             b"+NJS: 1", b"+JOIN: Start", b"+JOIN: Network joined", b"+JOIN: Done", b"+MSGHEX: Start",
             b"+MSGHEX: Done", b"+CMSGHEX: ACK Received", b'+MSGHEX: PORT: 2; RX: "0102"',
             b"+MSGHEX: RXWIN1, RSSI -84, SNR 6.0", b"+MSGHEX: No band in 1000ms", b"+PORT: 2",
             b"+KEY: APPKEY " + KEY.encode(), b"+KEY: ERROR(-1)", b"+ID: DevEui, 2C:F7:F1:20:24:90:03:63"]
chunk = st.one_of(st.binary(max_size=30), st.sampled_from(REALISTIC).map(lambda b: b + b"\r\n"))
replies = st.lists(st.lists(chunk, max_size=6).map(b"".join), max_size=40)


class AnsweringPort:
    """After each command line written, makes the next scripted reply readable."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.rx = bytearray()

    def write(self, buf):
        if bytes(buf).endswith(b"\r\n") and self.replies:
            self.rx += self.replies.pop(0)
        return len(buf)

    def read(self, n):
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dialect=st.sampled_from(DIALECTS), script=replies,
       ops=st.lists(st.sampled_from(["configure", "join", "send", "csend", "is_joined", "get_dr",
                                     "set_dr", "get_dev_eui"]), min_size=1, max_size=5))
def test_driver_fed_arbitrary_replies_raises_only_documented_errors(dialect, script, ops):
    m = ATModem(AnsweringPort(script), VirtualClock(), dialect, command_timeout_ms=200)
    for op in ops:
        try:
            if op == "configure":
                m.configure("70B3D57ED0061234", "70B3D57ED0000001", KEY)
            elif op == "join":
                assert m.join(timeout_ms=20000, attempts=2, backoff_ms=1000) in (True, False)
            elif op in ("send", "csend"):
                r = m.send(2, b"\x01", confirmed=op == "csend", timeout_ms=3000)
                assert r.status in ("sent", "confirmed", "not_confirmed", "duty_cycle", "not_joined", "busy")
            elif op == "is_joined":
                assert m.is_joined() in (True, False)
            elif op == "get_dr":
                assert 0 <= m.get_dr() <= 6
            elif op == "set_dr":
                m.set_dr(5)
            else:
                assert len(m.get_dev_eui()) == 16
        except ModemError as e:
            assert KEY not in str(e).upper()
        except OSError as e:
            assert e.errno == errno.ETIMEDOUT and KEY not in str(e).upper()


def _good_reply(dialect, cmd):
    """A correct reply to ``cmd`` (the bytes a healthy modem would send), in ``dialect``."""
    c = cmd.upper()
    if dialect == "rak3172":
        reads = {"AT+NWM=?": "1", "AT+NJS=?": "1", "AT+DR=?": "5", "AT+DEVEUI=?": "70B3D57ED0061234"}
        if c in reads:
            return "%s\r\n\r\nOK\r\n" % reads[c]
        if c.startswith("AT+JOIN"):
            return "\r\nOK\r\n+EVT:JOINED\r\n"
        if c.startswith("AT+SEND"):
            return "\r\nOK\r\n+EVT:TX_DONE\r\n+EVT:SEND_CONFIRMED_OK\r\n+EVT:RX_1:-70:8:UNICAST:1:1234\r\n"
        return "\r\nOK\r\n"
    name, _, arg = c[3:].partition("=")
    arg = arg.strip('"')
    if c == "AT":
        return "+AT: OK\r\n"
    if name == "JOIN":
        return "+JOIN: Start\r\n+JOIN: NORMAL\r\n+JOIN: Network joined\r\n+JOIN: Done\r\n"
    if name in ("MSGHEX", "CMSGHEX"):
        return ('+{0}: Start\r\n+{0}: ACK Received\r\n+{0}: PORT: 1; RX: "12"\r\n'
                "+{0}: RXWIN1, RSSI -70, SNR 8.0\r\n+{0}: Done\r\n").format(name)
    if name == "ID" and "," in arg:
        kind, _, eui = arg.partition(",")
        eui = eui.strip('"')
        return "+ID: %s, %s\r\n" % (kind, ":".join(eui[i:i + 2] for i in range(0, 16, 2)))
    if name == "ID":
        return "+ID: DevEui, 70:B3:D5:7E:D0:06:12:34\r\n"
    if name == "KEY":
        return "+KEY: APPKEY %s\r\n" % arg.partition(",")[2].strip('"')
    if name == "DR":
        return "+DR: %s\r\n" % ("EU868 DR5  SF7 BW125K" if arg.startswith("DR") or not arg else arg)
    if name == "NJS":
        return "+NJS: 1\r\n"
    if name == "CH":
        return "+CH: NUM, 0-2\r\n"
    return "+%s: %s\r\n" % (name, arg)


class MostlyRightPort:
    """Answers each command with the correct reply, unless the script says otherwise for it:
    junk bytes instead, the reply cut short, an extra stray line, or nothing."""

    def __init__(self, dialect, script):
        self.dialect = dialect
        self.script = list(script)
        self.rx = bytearray()
        self.pending = bytearray()

    def write(self, buf):
        self.pending += bytes(buf)
        while b"\r\n" in self.pending:
            line, _, rest = bytes(self.pending).partition(b"\r\n")
            self.pending = bytearray(rest)
            good = _good_reply(self.dialect, line.decode()).encode()
            how, junk = self.script.pop(0) if self.script else ("good", b"")
            self.rx += {"good": good, "junk": junk, "cut": good[:len(good) // 2], "silent": b"",
                        "extra": good + junk + b"\r\n"}[how]
        return len(buf)

    def read(self, n):
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


mutation = st.tuples(st.sampled_from(["good", "good", "good", "junk", "cut", "silent", "extra"]),
                     st.one_of(st.binary(max_size=20), st.sampled_from(REALISTIC)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dialect=st.sampled_from(DIALECTS), script=st.lists(mutation, max_size=30))
def test_driver_against_a_mostly_right_modem_raises_only_documented_errors(dialect, script):
    m = ATModem(MostlyRightPort(dialect, script), VirtualClock(), dialect, command_timeout_ms=200,
                rx_linger_ms=50)
    for op in ("configure", "join", "send", "csend", "is_joined", "get_dr", "get_dev_eui"):
        try:
            if op == "configure":
                m.configure("70B3D57ED0061234", "70B3D57ED0000001", KEY, adr=False, dr=5)
            elif op == "join":
                assert m.join(timeout_ms=20000, attempts=2, backoff_ms=1000) in (True, False)
            elif op in ("send", "csend"):
                r = m.send(2, b"\x01", confirmed=op == "csend", timeout_ms=3000)
                assert r.status in ("sent", "confirmed", "not_confirmed", "duty_cycle", "not_joined", "busy")
                if r.downlink is not None:
                    assert (r.downlink.port, r.downlink.payload) in ((1, b"\x12"), (1, b"\x12\x34"), (2, b"\x01\x02"))
            elif op == "is_joined":
                assert m.is_joined() in (True, False)
            elif op == "get_dr":
                assert 0 <= m.get_dr() <= 6
            else:
                assert len(m.get_dev_eui()) == 16
        except ModemError as e:
            assert KEY not in str(e).upper()
        except OSError as e:
            assert e.errno == errno.ETIMEDOUT and KEY not in str(e).upper()


def test_mostly_right_modem_with_no_faults_gets_through_everything():
    for dialect in DIALECTS:
        m = ATModem(MostlyRightPort(dialect, []), VirtualClock(), dialect)
        m.configure("70B3D57ED0061234", "70B3D57ED0000001", KEY, adr=False, dr=5)
        assert m.join() is True
        r = m.send(2, b"\x01", confirmed=True)
        assert r.status == SendResult.CONFIRMED and r.downlink.port == 1
        assert m.is_joined() and m.get_dr() == 5 and m.get_dev_eui() == "70B3D57ED0061234"
