"""The heap benchmark's 64-bit factor rests on a model of MicroPython's object layouts
(``simulators.bench_heap.layout_bytes``: 4-word GC blocks, each object's header and data in
words). The model is checked here against ``gc.mem_alloc()`` on this project's interpreter
(8-byte words), and against the figures recorded on a 32-bit build (4-byte words), so the
factor that scales an ESP32's heap to this port (``tests/e2e/nodeharness.py`` ``ESP32_HEAP``)
is not a guess."""

import pytest

from simulators import bench_heap


@pytest.fixture(scope="module")
def costs(tmp_path_factory):
    build = bench_heap.build_classroom(tmp_path_factory.mktemp("fw") / "flash")  # its .mpy modules
    return bench_heap.object_costs(lib=build / "lib")


def test_the_layout_model_predicts_every_object_on_this_64_bit_port(costs):
    objects = {name: b for name, b in costs.items() if not name.endswith("(.mpy)")}
    assert len(objects) == 13
    assert {name: bench_heap.layout_bytes(name, 8) for name in objects} == objects


def test_the_layout_model_predicts_the_figures_recorded_on_a_32_bit_port():
    recorded = {name: b for name, b in bench_heap.RECORDED_32BIT["objects"].items() if not name.endswith("(.mpy)")}
    assert {name: bench_heap.layout_bytes(name, 4) for name in recorded} == recorded


def test_small_objects_cost_twice_on_64_bits_and_byte_buffers_less(costs):
    assert costs["dict, 3 entries"] == 2 * bench_heap.RECORDED_32BIT["objects"]["dict, 3 entries"]
    assert costs["bound method"] == 2 * bench_heap.RECORDED_32BIT["objects"]["bound method"]
    assert costs["bytes(100)"] / bench_heap.RECORDED_32BIT["objects"]["bytes(100)"] == 1.25
    # loaded .mpy code sits in between: the bytecode is the same bytes, its pointers double
    ratio = costs["drivers.scd4x (.mpy)"] / bench_heap.RECORDED_32BIT["objects"]["drivers.scd4x (.mpy)"]
    assert 1.2 < ratio < 2.0, ratio
