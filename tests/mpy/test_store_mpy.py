"""The flash log and node state (firmware/app/store.py, state.py) under the MicroPython unix
port, on littlefs images in files (simulators/mpy/flashdev.py), with an ESP32-sized heap:
append/ack/trim and reopen, writing far past the bound, seq uniqueness across boots and
resumes, and what littlefs programs and erases per reading (tests/mpy/store/store_checks.py)."""

import json
import pathlib

import pytest

from simulators.mpyrun import run_micropython

SCRIPT = pathlib.Path(__file__).resolve().parent / "store" / "store_checks.py"
CHECKS = ("check_append_ack_trim_and_reopen", "check_more_than_the_bound",
          "check_seqs_unique_across_boots_and_resumes", "check_write_amplification",
          "check_ram_tail_per_cycle", "check_spent_segment_per_cycle")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    images = tmp_path_factory.mktemp("store-images")
    rc, out, err = run_micropython([str(SCRIPT), str(images)], sim=False, timeout_s=120)
    found = {}
    key = None
    for line in out.splitlines():
        if line.startswith("| ") and key:
            found[key] += "\n" + line
        elif line.startswith("CHECK "):
            _, key, text = line.split(" ", 2)
            found[key] = text
    assert rc == 0 and "DONE" in out.splitlines(), (rc, out[-2000:], err[-2000:])
    return found


@pytest.mark.parametrize("name", CHECKS)
def test_store_check_passes_in_micropython(results, name):
    text = results.get(name, "missing")
    assert text.startswith("PASS"), text


def _measured(results, name):
    text = results[name]
    assert text.startswith("PASS"), text
    return json.loads(text[len("PASS "):])


def test_writing_past_the_bound_keeps_the_flash_bounded_and_counts_exactly(results):
    m = _measured(results, "check_more_than_the_bound")
    # dropped counts every key lost: the readings and the gap records merged into a later gap
    assert m["appended"] + m["merged"] == m["held"] + m["dropped"] and m["gap_records"] >= 1
    assert m["merged"] >= 1
    assert m["bytes"] <= 16384


def test_write_amplification_per_reading(results):
    """What littlefs programs and erases per reading (the numbers docs/node-storage.md gives).
    A reading appended while older ones are pending costs one block copy and one erase; with
    the link up the log is trimmed each wake and the next append is a small inline file."""
    m = _measured(results, "check_write_amplification")
    down, up = m["deepsleep_link_down"], m["deepsleep_link_up"]
    assert down["erases_per_reading"] <= 1.2 and down["programmed_per_reading"] <= 4096 + 512
    assert up["erases_per_reading"] < down["erases_per_reading"]
    assert m["mains_link_down"]["erases_per_reading"] <= 1.2
    assert m["state_save"]["erases"] < 0.2 and m["state_save"]["programmed"] < 256  # inline
    assert m["counters_save"]["erases"] < 0.2


def test_a_mains_cycle_replaces_its_spent_segment(results):
    """With the link up a mains cycle rewrites one small segment file in place of deleting it
    and creating the next: two commits a cycle (the segment, the ack pointer's slot), both
    inline in the directory's metadata, so well under one erase a cycle."""
    m = _measured(results, "check_spent_segment_per_cycle")
    # deleting and creating a segment each cycle took ~5.1 block writes and ~370 B programmed
    assert m["block_writes_per_cycle"] < 4 and m["erases_per_cycle"] < 0.2
    assert m["programmed_per_cycle"] < 320
