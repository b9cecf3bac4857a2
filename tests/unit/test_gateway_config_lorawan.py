"""``[upstream.lorawan]`` keys of the gateway configuration (gateway/config.py): a key's
default, its range, a clear error naming it and the file, and its way to the forwarder."""

import pytest

from gateway import app, config
from gateway.config import ConfigError
from gateway.security import Secrets
from simulators.clock import VirtualClock
from tests.unit.test_gateway_config import base, load, write


LORAWAN_UP = {"port": "/dev/ttyAMA0", "dialect": "rak3172", "join_eui": "00" * 8, "app_key_file": "k"}


def test_lorawan_max_delay_s_has_a_default_a_range_and_reaches_the_forwarder(tmp_path):
    d = base()
    d["upstream"] = {"lorawan": dict(LORAWAN_UP)}
    assert load(tmp_path, d).upstream_lorawan.max_delay_s == 900
    d["upstream"]["lorawan"]["max_delay_s"] = 60
    cfg = load(tmp_path, d)
    assert cfg.upstream_lorawan.max_delay_s == 60
    fwd = app.build_forwarder(cfg, Secrets({}, {}, bytes(16)), VirtualClock())
    assert fwd.max_delay_ms == 60000
    for bad, words in ((-1, "0..86400"), (86401, "0..86400"), ("15 min", "integer"),
                       (1.5, "integer"), (True, "integer")):
        d["upstream"]["lorawan"]["max_delay_s"] = bad
        path = write(tmp_path, d)
        with pytest.raises(ConfigError) as e:
            config.load(path)
        assert (e.value.key, e.value.file) == ("upstream.lorawan.max_delay_s", str(path))
        assert words in e.value.message
