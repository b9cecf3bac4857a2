"""Downlinks into configuration changes (firmware/app/downlink.py) on CPython: a port-10 CBOR
map received is kept on flash, checked by the node's own validator at the next boot and
applied there (overrides.json written atomically); every malformed or hostile downlink is
rejected and counted and changes nothing; arbitrary bytes never raise."""

import json
import os

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.app import config, downlink
from tests.unit.test_config import EXAMPLE


@pytest.fixture
def base():
    """A validated configuration (the classroom example: interval 120 s, SCD41 periodic)."""
    return config.load_config(str(EXAMPLE))


@pytest.fixture
def root(tmp_path):
    downlink.take_counts({})  # the module counts per boot: start from none
    return str(tmp_path)


def boot(cfg, root):
    """What the next boot does: apply, then the link takes the counts."""
    out = downlink.apply_overrides(cfg, root, config.validate)
    counts = {}
    downlink.take_counts(counts)
    return out, counts


def send(root, *payloads, port=downlink.PORT_CONFIG):
    counters = {}
    kept = [downlink.receive(port, p, root, counters) for p in payloads]
    return kept, counters


def overrides(root):
    try:
        with open(os.path.join(root, downlink.OVERRIDES)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def test_the_documented_example_is_14_bytes():
    payload = bytes.fromhex("a16a696e74657276616c5f73183c")
    assert payload == cbor2.dumps({"interval_s": 60})
    assert downlink.parse_change(payload) == {"interval_s": 60}


def test_a_valid_change_is_kept_then_applied_at_the_next_boot(base, root):
    assert send(root, cbor2.dumps({"interval_s": 60})) == ([True], {})
    assert overrides(root) == {"set": {}, "base": {}, "inbox": ["a16a696e74657276616c5f73183c"]}
    booted, counts = boot(base, root)
    assert booted["interval_s"] == 60 and base["interval_s"] == 120
    assert booted["status_every_n_cycles"] == base["status_every_n_cycles"]
    assert counts == {"downlinks_applied": 1}
    assert overrides(root) == {"set": {"interval_s": 60}, "base": {"interval_s": 120}}
    assert os.listdir(root) == [downlink.OVERRIDES]  # the temporary file was renamed
    again, counts = boot(base, root)  # every later boot applies it, counting nothing
    assert again == booted and counts == {}


def test_changes_accumulate_and_a_return_to_the_flashed_value_drops_the_override(base, root):
    send(root, cbor2.dumps({"interval_s": 60}), cbor2.dumps({"status_every_n_cycles": 5}))
    booted, counts = boot(base, root)
    assert (booted["interval_s"], booted["status_every_n_cycles"]) == (60, 5)
    assert counts == {"downlinks_applied": 2}
    assert overrides(root) == {"set": {"interval_s": 60, "status_every_n_cycles": 5},
                               "base": {"interval_s": 120, "status_every_n_cycles": 30}}
    send(root, cbor2.dumps({"interval_s": 120}))  # back to config.json's value
    booted, counts = boot(base, root)
    assert (booted["interval_s"], booted["status_every_n_cycles"]) == (120, 5)
    assert overrides(root) == {"set": {"status_every_n_cycles": 5}, "base": {"status_every_n_cycles": 30}}
    send(root, cbor2.dumps({"status_every_n_cycles": 30}))
    booted, counts = boot(base, root)
    assert booted is base and overrides(root) is None  # nothing left to override: no file
    assert counts == {"downlinks_applied": 1}


def test_each_change_is_checked_against_the_ones_before_it(base, root):
    # mean 600 needs an interval dividing it: 120 does, 7 does not; the order decides
    send(root, cbor2.dumps({"mean_period_s": 600}), cbor2.dumps({"interval_s": 7}),
         cbor2.dumps({"interval_s": 60}))
    booted, counts = boot(base, root)
    assert (booted["mean_period_s"], booted["interval_s"]) == (600, 60)
    assert counts == {"downlinks_applied": 2, "downlinks_rejected": 1}


def test_a_newer_config_json_wins_over_an_old_override(base, root):
    send(root, cbor2.dumps({"interval_s": 60, "status_every_n_cycles": 5}))
    boot(base, root)
    reflashed = dict(base, interval_s=600)  # the engineer flashed a new interval since
    booted, counts = boot(reflashed, root)
    assert booted["interval_s"] == 600 and booted["status_every_n_cycles"] == 5
    assert overrides(root) == {"set": {"status_every_n_cycles": 5}, "base": {"status_every_n_cycles": 30}}


def test_overrides_that_no_longer_validate_are_removed_at_boot(base, root, capsys):
    send(root, cbor2.dumps({"interval_s": 60}))
    boot(base, root)
    changed = dict(base, mean_period_s=900)  # a new config.json: 60 still divides 900
    assert boot(changed, root)[0]["interval_s"] == 60
    with open(os.path.join(root, downlink.OVERRIDES), "w") as f:  # an override 900 is no multiple of
        json.dump({"set": {"interval_s": 7}, "base": {"interval_s": 120}}, f)
    booted, counts = boot(changed, root)
    assert booted is changed and overrides(root) is None
    assert "mean_period_s" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"set": {"device_id": 1}, "base": {}}',
                                     b'{"set": {"interval_s": "60"}, "base": {"interval_s": 120}}',
                                     b'{"set": {"interval_s": 60}}', b"\xff\xfe",
                                     b'{"set": {}, "base": {}, "inbox": "a0"}',
                                     b'{"set": {}, "base": {}, "inbox": [1]}',
                                     b'{"set": {}, "base": {}, "inbox": ["a0", "a0", "a0", "a0", "a0"]}'])
def test_an_unreadable_overrides_file_is_removed_and_ignored(base, root, content, capsys):
    path = os.path.join(root, downlink.OVERRIDES)
    with open(path, "wb") as f:
        f.write(content)
    assert send(root, cbor2.dumps({"interval_s": 60})) == ([False], {"downlinks_rejected": 1})
    with open(path + ".tmp", "wb") as f:
        f.write(b'{"set": {"interval_s": 5')  # a write the power cut interrupted
    assert boot(base, root) == (base, {})
    assert os.listdir(root) == []
    assert "unreadable" in capsys.readouterr().out


def test_no_overrides_file_means_the_configuration_as_flashed(base, root):
    assert boot(base, root)[0] is base


def _map(pairs):
    """A CBOR map written by hand (for what cbor2 will not produce, e.g. duplicate keys)."""
    out = bytearray([0xA0 | len(pairs)])
    for k, v in pairs:
        out += cbor2.dumps(k) + cbor2.dumps(v)
    return bytes(out)


HOSTILE = {  # each kept on receipt (it is a port-10 payload of a sane size), rejected at boot
    "not cbor": b"\xff\x00\x01garbage",
    "truncated": cbor2.dumps({"interval_s": 60})[:-1],
    "trailing bytes": cbor2.dumps({"interval_s": 60}) + b"\x00",
    "an array": cbor2.dumps([60]),
    "an int": cbor2.dumps(60),
    "a text": cbor2.dumps("interval_s=60"),
    "empty map": cbor2.dumps({}),
    "unknown key": cbor2.dumps({"interval": 60}),
    "identity key": cbor2.dumps({"device_id": 7}),
    "a nested link key": cbor2.dumps({"link": {"lorawan": {"confirmed": False}}}),
    "an int key": cbor2.dumps({1: 60}),
    "one bad key spoils it": cbor2.dumps({"interval_s": 60, "watchdog_ms": 5000}),
    "text value": cbor2.dumps({"interval_s": "60"}),
    "float value": cbor2.dumps({"interval_s": 60.0}),
    "bool value": cbor2.dumps({"status_every_n_cycles": True}),
    "null value": cbor2.dumps({"interval_s": None}),
    "bytes value": cbor2.dumps({"interval_s": b"\x3c"}),
    "below range": cbor2.dumps({"interval_s": 4}),
    "above range": cbor2.dumps({"interval_s": 86401}),
    "negative": cbor2.dumps({"interval_s": -60}),
    "huge": cbor2.dumps({"interval_s": 2 ** 64 - 1}),
    "zero status": cbor2.dumps({"status_every_n_cycles": 0}),
    "cross-field rule": cbor2.dumps({"mean_period_s": 900, "interval_s": 7}),
    "mean not a multiple": cbor2.dumps({"mean_period_s": 1000}),
    "duplicate keys": _map([("interval_s", 60), ("interval_s", 600)]),
    "indefinite map": b"\xbf" + cbor2.dumps("interval_s") + cbor2.dumps(60) + b"\xff",
    "tagged value": _map([("interval_s", cbor2.CBORTag(1, 60))]),
    "deep nesting": b"\xa1\x6ainterval_s" + b"\x81" * 40 + b"\x00",
    "forged length": b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff",
    "invalid utf-8 key": b"\xa1\x62\xc3\x28\x18\x3c",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_malformed_or_disallowed_downlink_is_rejected_and_counted(base, root, name):
    send(root, cbor2.dumps({"status_every_n_cycles": 5}))  # an earlier good change
    before, _ = boot(base, root)
    assert send(root, HOSTILE[name]) == ([True], {})
    booted, counts = boot(base, root)
    assert booted == before and counts == {"downlinks_rejected": 1}
    assert overrides(root) == {"set": {"status_every_n_cycles": 5}, "base": {"status_every_n_cycles": 30}}
    with pytest.raises(downlink.DownlinkError):
        downlink.merge_change(base, None, downlink.parse_change(HOSTILE[name]), config.validate)


@pytest.mark.parametrize("port, payload", [(p, cbor2.dumps({"interval_s": 60})) for p in (0, 1, 2, 9, 11, 223, 255)]
                         + [(10, b""), (10, bytes(65)), (10, "a16a")])
def test_another_port_or_size_is_rejected_on_receipt(base, root, port, payload):
    assert send(root, payload, port=port) == ([False], {"downlinks_rejected": 1})
    assert overrides(root) is None


def test_the_inbox_is_bounded(base, root):
    kept, counters = send(root, *[cbor2.dumps({"interval_s": 60 + i}) for i in range(downlink.INBOX_MAX + 2)])
    assert kept == [True] * downlink.INBOX_MAX + [False, False]
    assert counters == {"downlinks_rejected": 2}
    booted, counts = boot(base, root)
    assert booted["interval_s"] == 60 + downlink.INBOX_MAX - 1
    assert counts == {"downlinks_applied": downlink.INBOX_MAX}


def test_a_flash_failure_is_a_counted_rejection(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    assert send(missing, cbor2.dumps({"interval_s": 60})) == ([False], {"downlinks_rejected": 1})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(port=st.integers(0, 255), payload=st.binary(max_size=80))
def test_arbitrary_bytes_never_raise(base, tmp_path, port, payload):
    root = str(tmp_path)
    downlink._remove(os.path.join(root, downlink.OVERRIDES))
    kept, counters = send(root, payload, port=port)
    booted, counts = boot(base, root)
    assert sum(counters.values()) + sum(counts.values()) == 1  # each downlink counted once
    if counts.get("downlinks_applied"):
        assert set(downlink.parse_change(payload)) <= set(downlink.ALLOWED)
        config.validate(booted)
    else:
        assert booted is base


_VALUES = st.one_of(st.integers(-2 ** 64, 2 ** 64 - 1), st.integers(-10, 100000), st.floats(), st.booleans(),
                    st.none(), st.text(max_size=8), st.binary(max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.dictionaries(st.one_of(st.sampled_from(downlink.ALLOWED + ("device_id", "link")),
                                        st.text(max_size=12), st.integers()),
                              st.one_of(_VALUES, st.lists(_VALUES, max_size=3)), max_size=3))
def test_arbitrary_cbor_maps_never_raise_and_only_valid_ones_apply(base, tmp_path, change):
    root = str(tmp_path)
    downlink._remove(os.path.join(root, downlink.OVERRIDES))
    payload = cbor2.dumps(change)
    kept, counters = send(root, payload)
    booted, counts = boot(base, root)
    if counts.get("downlinks_applied"):
        for key, value in change.items():
            assert booted[key] == value
        assert config.validate(booted) == booted
    else:
        assert booted is base
        assert counters.get("downlinks_rejected", 0) + counts.get("downlinks_rejected", 0) == 1
