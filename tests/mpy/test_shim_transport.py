"""The board's link to its sensor server (``simulators/mpy/simlink.py``): the server's Unix
socket (``SimServer.address``, what the fleet and the tests give a board) and its TCP port
(``tcp_address``, for a board started by hand) answer the same; the socket's directory goes
with the server."""

import os

import pytest

from simulators.i2c_server import SimServer
from simulators.mpyrun import run_micropython

SCRIPT = """
import machine, simlink
i2c = machine.I2C(0)
buf = bytearray(2)
i2c.readfrom_mem_into(0x20, 1, buf)
print("OUT", list(buf), simlink.counts[0])
"""


@pytest.mark.parametrize("tcp", [False, True])
def test_a_board_reads_its_parts_over_either_socket(tcp):
    with SimServer() as srv:
        srv.rig.setup([{"model": "echo", "address": 0x20, "initial": [5, 6, 7]}])
        address = srv.tcp_address if tcp else srv.address
        assert address.startswith("127.0.0.1:" if tcp else "unix:")
        rc, out, err = run_micropython(["-c", SCRIPT], server=srv, sim=False, env={"CIVICEDGE_SIM": address})
        assert rc == 0, out + err
        assert "OUT [6, 7] 1" in out  # one request: the register read
        path = srv.address[len("unix:"):]
    assert not os.path.exists(os.path.dirname(path))


def test_a_server_without_its_unix_socket_names_its_tcp_port():
    with SimServer(unix=False) as srv:
        assert srv.address == srv.tcp_address == "127.0.0.1:%d" % srv.port
