"""The prose notes of the ``heap`` benchmark (``simulators/bench_heap.py``) in
docs/benchmarks.md: what was cut and when, how to build the 32-bit port, and where the
simulation's heap differs from an ESP32's."""

HISTORY = """**What was cut** (issue 3 heap work, 2026-11-22; least free heap for 5 wakes by bisection, the last row \
also by the confirmed scan above; live heap = `gc.mem_alloc()` after the first wake's collection, less the board's):

| step | this 64-bit port | 32-bit port | live heap, 64 / 32-bit |
|---|---|---|---|
| before (commit 3357d49) | 175 KB | 138 KB | 123.8 / 85.2 KB (or ~96 KB when a stale stack slot pins the validator) |
| `boot.py`: `gc.threshold(8192)`, so garbage is collected before it fragments the heap | 144 KB | 113 KB | |
| `app.downlink` released after boot unless the link is LoRaWAN | 140 KB | 110 KB | |
| the CBOR decoder moved to `protocol/cbor_decode.py`, loaded by the first `cbor.loads` (a node only encodes) | 135 KB | 107 KB | |
| each sensor part's class in its own module, imported only if configured; SCD4x command codes private `const`s | 133 KB | 106 KB | |
| the configuration step in `app/startup.py` (its frame is gone before the collection), `app.downlink` imported only when an overrides file exists, the collection made from freshly written frames (`collect_deep`) | 133-144 KB | 102-104 KB | 113.2 / 77.5 KB |
| `main.py` a two-line stub, the composition root shipped compiled as `app/main.mpy` (2026-11-23; classroom-co2, confirmed scan, same machine and run) | 147 → 137 KB | 106 → 96 KB | |

The live heap fell by ~9 % (~19 KB on the 32-bit port where the validator used to stay pinned). The least free heap \
fell more (by 18-23 %), mostly through the GC threshold: loading `.mpy` code leaves short-lived garbage between \
long-lived objects, and collected late it becomes holes nothing later fits in. The stub changed nothing by plain \
bisection (137 KB here, 98-99 KB on 32 bits): where the firmware runs out is its first delivery, with every module \
loaded (~101 KB of code and interned names here, ~71 KB on 32 bits, for the classroom node); what it removed is the \
7 KB block that compiling `main.py` needed at every boot, which a heap fragmented by the earlier boots' interned \
names sometimes could not give (below)."""

RECIPE = """**The 32-bit port** (not installed by `scripts/setup`; CI uses the factor): MicroPython v1.29 source \
(micropython/micropython), `apt-get install gcc-multilib`, then `make -C mpy-cross` and `make -C ports/unix \
VARIANT=standard CFLAGS_EXTRA=-m32 LDFLAGS_EXTRA=-m32 MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 \
MICROPY_SSL_MBEDTLS=0 FROZEN_MANIFEST=` (an `ELF 32-bit ... Intel 80386` binary: 4-byte words, 16-byte GC \
blocks, as on an ESP32; it runs `board.py` and the firmware unchanged). `CIVICEDGE_MICROPYTHON32=<it> \
scripts/bench heap` measures everything above on it too. A 64-bit build of the same source and options needs \
the same live heap as this project's interpreter (112.9 vs 113.2 KB), so the factor is the word size, not the \
build."""

ARTIFACTS = """**Where the simulation costs more than an ESP32** (so the figures above are pessimistic, not \
flattering): after the first boot `board.py` keeps the firmware's interned names, scattered through the heap (an \
ESP32's deep sleep clears them): ~31 KB here, so from the second boot the firmware finds that much less free and \
its large allocations less room in one piece. Compiling the old 190-line `main.py` at every boot needed a 7 KB \
block and failed first that way at some pairs of free and total heap; the stub needs none. The shim's own ~540 \
interned names fill the qstr pools the firmware then grows (on an ESP32 `machine` is in flash), so a 14 KB \
(9 KB on 32 bits) pool is allocated during the link's import; the trivial firmware needs 15-19 KB here where \
an ESP32 needs almost none. Near its limit the heap is also chaotic: MicroPython's GC scans the C stack \
conservatively, so a stale pointer can pin a released module — that is why `app/startup.py` exists."""

LORAWAN = """**Why the LoRaWAN nodes needed more, and what was cut** (module code a legionella-outlet node \
loads, `gc.mem_alloc()` around each import on the 32-bit port). Before (2026-11-23): the AT-modem driver \
(`drivers/atmodem.py`, `atmodem_core.py`, `atmodem_rak.py`) 16.6 KB, `protocol/lorapack.py` 9.0 KB, \
`protocol/airtime.py` 5.8 KB, `app/links/lorawan.py` 5.3 KB, `drivers/tmp117.py` 7.0 KB (11.7 KB with what it \
interns); the firmware's own `app/*` modules ~34 KB in all (the serial classroom node loads the SenML, CBOR, \
frame and HMAC modules, ~24 KB, instead). This benchmark's figures before the cuts (confirmed scan, \
2026-11-23), 64-bit / 32-bit port: legionella-outlet 149 / 104 KB, bin-level 158 / 109 KB, street-no2 167 / 115 KB; \
after them: the table at the top. The steps, legionella-outlet by plain bisection on the same machine in one run:

| step (2026-11-22, issue 3 heap work for the LoRaWAN profiles) | 32-bit | 64-bit |
|---|---|---|
| before | 105 KB | 149 KB |
| the duty-cycle and fair-use budgets and the sub-band table moved to `protocol/dutycycle.py` (the gateway's and the simulators'; `protocol.airtime` still answers for them by loading it on first use): `airtime` 8.0 → 2.0 KB | 101 KB | |
| the modem's join-time code (`configure`, `join`, `get_dev_eui`, `set_dr`; `drivers/atmodem_join.py`, the RAK's sequences in `atmodem_rak_join.py`) loaded for the call and released after it (`drivers.release`) | 100 KB | |
| the node's part of the TMP117 driver (`drivers/tmp117_core.py`, `TMP117Core`: identity, mode, averaging, offset, conversions) on its own; `drivers/tmp117.py` (limits, alerts, conversion cycle, soft reset, the decoded configuration) subclasses and re-exports it: 11.7 → 4.4 KB | 96 KB | |
| `protocol.lorapack` and `protocol.airtime` imported by the link's `deliver()`, not while the node samples and logs; the link's join and backoff (`app/links/lorawan_join.py`) loaded only when the modem has no session, and released | 95 KB | 140 KB |

The link's whole stack (`drivers/port.py`, the modem driver, `protocol/quantities.py`, the pack, airtime, the \
link) now takes 35.5 KB on the 32-bit port where it took 42.0 KB (the same probe, in the same order), the \
TMP117 4.4 KB where it took 11.7 KB, and the same bytes go on the wire (`tests/e2e/test_node_lorawan.py`, `tests/mpy/test_atmodem_mpy.py`). A LoRaWAN node \
runs out while it logs or packs (`app/store.py`, `app/segment.py`), with every module loaded. What the other two \
LoRaWAN profiles need beyond legionella-outlet is their sensors' drivers, not the link: bin-level's \
`drivers/i2cxl.py` with `binfill.py` ~6 KB, street-no2's `drivers/ads1115.py` + `no2b43f.py` ~12.7 KB (with what \
they intern). Cut (2026-11-22; 32-bit port, plain bisection, same machine and run; before: bin-level 103 KB, \
street-no2 108 KB):

| step | bin-level | street-no2 |
|---|---|---|
| the node's part of each driver on its own, the full driver subclassing and re-exporting it: \
`drivers/i2cxl_core.py` (`I2CXLCore`: ranging, the median, the correction) + `binfill_core.py` 5.4 → 4.7 KB; \
`drivers/ads1115_core.py` (`ADS1115Core`: single-shot conversions; continuous mode, `decode_config`, gains and \
volts-to-codes stay in `ads1115.py`) 6.8 → 5.8 KB; `drivers/no2b43f_core.py` (the corrections, ppb, µg/m³, \
`CalibrationCore.from_fields`; reading and writing whole sheets stay in `no2b43f.py`, the build's) 5.8 → 3.2 KB | 101 KB | 105 KB |
| those core modules loaded by the part's `read()` and released after it (`app/part_sonar.py`, `app/part_no2.py`), so the \
node does not hold them while it logs and packs; the I2CXL's ring-down deadline kept by the part; `prepare` left to the driver's checks at each read | 97 KB | 98 KB |

| the TMP117's core released after each read the same way (`app/part_tmp117.py`; the conversion's deadline kept \
by the part), on all three LoRaWAN profiles (5.6 KB on 32 bits with what it interns) | | |

The confirmed scan after the drivers' cuts gave bin-level 141 / 99 KB and street-no2 141 / 97 KB, 64-bit / 32-bit \
(before: 148 / 101 and 157 / 107), against legionella-outlet's 137 / 97 KB in that run; with the TMP117's core \
released too, the table at the top (one run, 2026-11-22): every profile at most 140 KB here and 96 KB on 32 bits. \
Frozen into the MicroPython image (frozen bytecode or a ROMFS partition runs from flash on an ESP32 and costs no \
heap) the drivers and the link would cost no heap at all — not done here (it needs a custom MicroPython image). \
`tests/e2e/test_node_heap.py` runs the legionella-outlet node for 60 wakes at the ESP32-equivalent heap."""

MQTT = """**The MQTT link** (classroom-co2 with `link=mqtt` as the profile ships it: TLS with the CA on the flash, \
user name and password, QoS 1, persistent session; `simulators/bench_heap_mqtt.py`: a real Mosquitto with TLS, \
passwords and the nodes' ACL, restarted for every heap tried, and `MQTTGatewayStub`; deep sleep, so every wake \
connects). Before (2026-11-22) its modules took 27.9 KB here / 20.7 KB on the 32-bit port (`protocol.mqtt_packets` \
11.9 / 8.5, `app.mqtt` 7.8 / 5.9, `app.links.mqtt` 5.5 / 4.3, `app.mqtt_tls` 2.8 / 2.1; `gc.mem_alloc()` around \
each import) where the serial link's take 5.3 / 3.9 KB; Mbed TLS allocates outside the GC heap (only the 3 KB \
`SSLContext` and the 0.5 KB socket are in it: docs/mqtt-link.md, Memory). The cuts, plain bisection on the same \
machine (MQTT+TLS here / plain MQTT on 32 bits):

| step (2026-11-22) | 64-bit, TLS | 32-bit, plain |
|---|---|---|
| before | 175 KB | 122 KB |
| the protocol stack the frames need (`protocol.frame`, `senml`, `quantities`, `cbor`, `auth`: 31-42 KB here) \
loaded by the first delivery (`_framer` in `app/links/mqtt.py`: `MQTTLink` is no longer a `FramedLink` subclass), \
not by the link's import, so not while the node connects | 173 KB | |
| the client's connection half (`app/mqtt_connect.py`: argument checks, TCP and TLS, CONNECT/CONNACK with the \
session's resend or requeue, SUBSCRIBE/SUBACK) and `app.mqtt_tls` loaded by `open()` and released after it | 170 \
KB | 121 KB |
| the packets handled at every wake in `protocol/mqtt_wire.py`; CONNECT, SUBSCRIBE and the test server's encoders \
left in `protocol/mqtt_packets.py` (which re-exports the rest), loaded only to connect and released | 170-172 KB | \
117 KB |
| the link's connection step (WiFi, backoff, the client and its connection: `app/links/mqtt_open.py`) loaded by \
`open()` and released with the rest | 168 KB | 115 KB |
| second pass, same method (`bench_heap._least_confirmed` on the MQTT profile alone; before: 167 / 113 KB): the \
every-wake decoder handles PUBLISH, PUBACK and PINGRESP only (the rest, `PacketReader` and every encoder in \
`protocol/mqtt_packets.py`, loaded when needed); the client's constructor and `MQTTRefused` in \
`app/mqtt_connect.py` | 163 KB | 110 KB |
| the client's per-wake calls (`poll`, `publish`, `ping`: `app/mqtt_io.py`) loaded per exchange and released | 157 \
KB | 106 KB |
| the link's exchange (`app/links/mqtt_exchange.py`) loaded per frame; its constructor and the light-sleep start \
and end of a cycle in `app/links/mqtt_open.py`; frame buffers of 1280 B (the boot wake's frame is ~1.17 KB); no \
PUBLISH buffer lent at connect time (the client makes its own at its first publish) | 152 KB | 104 KB |
| third pass: the node's part of the frame stack in `protocol/frame_core.py`, `senml_core.py`, \
`quantities_core.py` and `auth_core.py` (the full modules re-export them for the gateway): 38.6 -> 28.1 KB \
resident here, 27.1 -> 22.6 KB on 32 bits; the same bytes on the wire | 146 KB | 100 KB |
| fourth pass (session 7): a deep-sleep node builds its frame before it connects (`FramedLink.next_frame`), \
releases and collects the pack's modules, then connects and exchanges (`mqtt_exchange.send`); its TLS context and \
frame buffers made with the link, the PUBLISH built in the pack's buffer. Same-simulator pairs: 160 -> 143 KB \
here, 101 -> 102 KB on 32 bits; this run (the board's flash and boot changed too) | 144 KB | 103 KB |
| fifth pass (session 8): the frame built in place around the pack: one buffer with room for the PUBLISH's header \
and the frame's, the SenML pack encoded there, the frame's header and tag written around it \
(`frame_core.seal_data_into`), the PUBLISH around the frame (`MQTTClient.lend(buf, at)`; the pack buffer lent \
before had the pack's length, so every exchange had made a new 1.2 KB PUBLISH); `app.mqtt` loaded to connect and \
released with the rest. Same bytes on the wire. Live heap after a collection (200 KB run): logged -3.0 KB, packed \
-2.4, connected -1.2, exchange -1.3. Confirmed scan, same tree and run, these files at HEAD / changed: 147 / **144 \
KB** twice (32-bit port not installed: not measured). Still **no margin at 146 KB**: the TLS context's 3 KB block, \
made with the link, is the next limit (below) | 144 KB | |
| sixth pass (session 8): the link made first in `app/main.py`, right after the watchdog (before the node's state, \
the log and the sensors), so the TLS context's 3 KB block and the frame buffer are made while the heap is in one \
piece; the ack's half of the frame code (`verify`, `decode_ack`, `ack_trims`, `FrameError`, `Ack`) in \
`protocol/frame_ack_core.py`, loaded only to check an ack and released after it (with the exchange's code; \
`FramedLink.check_ack` on the serial link), what both halves share in `protocol/frame_wire.py`: the frame code \
held while packing 7.3 -> 5.3 KB here, while checking the ack 7.3 -> 4.4 KB (it had loaded all of `frame_core` \
again). Same bytes on the wire. Confirmed scan, two runs each, same run, only these files differing: at HEAD 145, \
the reorder alone 145, the split alone 142, both **142 KB** (143 from copies at two other paths). At 146 KB \
(`ESP32_HEAP`), 100 wakes: no MemoryError in 25 runs of 101 boots from three paths (this checkout 10, a copy at \
another path 10, a third 5); none at 144 KB either; the split alone had 1 failing boot in 60 wakes at 146 KB, so \
the reorder stays. `tests/e2e/test_node_heap.py` runs the MQTT+TLS node at `ESP32_HEAP` | 142 KB | |

The MQTT code the node holds while it logs and packs is now 5.9 KB here / 4.1 KB on 32 bits (24 / 17.5 KB before \
the second pass); the rest is loaded for an exchange and released after it. Every phase of a wake now runs out \
within ~2 KB of the others (the log's scan, the SenML pack, the frame buffer, the TLS context's 3 KB block while \
connecting, loading `app.mqtt_io` for the exchange): what they all hold is the frame protocol stack (~31 KB), the \
connection's objects (~6 KB) and the frame buffers. After the third pass the node fits the 146 KB an ESP32's 100 \
KB is here, and the 32-bit port's 100 KB, **exactly, with no margin** (the serial classroom node went 137 -> 130 \
KB here with the same split). Not robustly then: 100 wakes of `tests/e2e/test_node_heap.py`'s MQTT+TLS run at 146 \
KB (`ESP32_HEAP`) had 3 of 101 boots end in a MemoryError (513 bytes; the watchdog reset the node), so that test \
ran at 200 KB until the sixth pass (below).

Before the second pass the node ran out in its delivery (the log's scan, the SenML pack; a 32-byte allocation, so \
the heap is full, not fragmented) holding the protocol stack, the steady MQTT code (`protocol.mqtt_wire` 8.8 / 6.3 \
KB, `app.mqtt` 6.7 / 4.9, `app.links.mqtt` 5.7 / 4.2: 21 / 15.5 KB against the serial link's 5.3 / 3.9) and the \
connection's objects (~7 KB here: the client, its reader, the PUBLISH buffer, the TLS context and socket). The \
client's code is resident through the SenML pack because the connection is made before the cycle (`app/main.py` \
calls `open()` first); a deep-sleep node that built its frame first, released the pack's modules (`senml`, \
`quantities`, `cbor`, `app.links.framed`) and only then connected would hold one set or the other, not both: the \
fourth pass does that, and gained here (TLS) but not on 32 bits, where the log's scan and the PUBLISH are the \
limits. The code out of the heap (frozen bytecode or a ROMFS partition: docs/mqtt-link.md, "Code out of the heap", \
119 KB here besides the image, ~82 KB at the factor) would close the gap too; not done. \
`tests/e2e/test_node_heap.py` runs the MQTT+TLS node for 100 wakes, every reading delivered, without memory \
growth: at `ESP32_HEAP` since the sixth pass, with 200 KB free before it.

After the fifth pass (session 8) the phase that fails first near 146 KB is mostly not a phase's need but the \
heap's shape: the TLS context (`tls.SSLContext`, 3048 bytes in one piece) made with the link finds no 96-block \
hole (`micropython.mem_info(1)` at the failure: 35 KB free, the largest free run 92 blocks), because the boot's \
earlier loading (and, on the board, what the first boot interned) leaves the free room in pieces. Whether it fits \
flips with unrelated code: at 146 KB, 100 wakes of the tree before this pass failed in 99 of 101 boots there, \
after it in 0 or 1 of 101 (this checkout; 0 from a copy at another path), yet 20 wakes at 146 KB fail there in \
every boot. Made earlier in the boot (the link constructed right after the watchdog, before the log and the \
sensors: an experiment in a copy of `app/main.py`, not applied), it never failed in the same 12 runs (20/60/100 \
wakes x 142-148 KB); what fails is then the log's scan and the SenML pack at 142 KB, and at 144-146 KB 1 or 2 \
boots in 60-100 (the SenML pack; loading `app.mqtt_io` for the exchange); confirmed scan 144 KB. No 4 KB margin \
either way, so `tests/e2e/test_node_heap.py` ran the MQTT+TLS node at 200 KB.

After the sixth pass (session 8) the link, and with it the TLS context, is made before anything else is loaded \
(`app/main.py`), and a node no longer holds the ack's code while it logs and packs, nor the encoder's while it \
waits for the ack. What fails first now is a phase's need, not a hole: at 140-141 KB loading the pack's modules \
(`protocol.senml_core` for the first frame), at 142 KB 2 boots in 101 (100 wakes; the log's scan, `app/store.py`); \
at 144 and 146 KB none in 100 wakes. What the node holds through the pack besides its own code, the log and the \
frame stack: the sensor's driver (`drivers.scd4x` with `scd4x_commands` and `sensirion`, ~18 KB here with the \
names they intern at the first boot), `protocol.quality` (~3 KB) and `app.hw` (~4 KB); releasing the SCD4x driver \
after each read, as the LoRaWAN profiles' TMP117 core is (`app/part_tmp117.py`), is the next cut to try (not done: \
not these files). The other profiles did not get worse (confirmed scan, the same runs, these files at HEAD / \
changed): classroom-co2 on its serial link 132, 132 / 131, 132 KB, legionella-outlet 134, 134 / 135, 134, \
bin-level 137, 137 / 137, 137, street-no2 138, 137 / 137, 138 (a copy at another path, two runs: 131, 134, \
136-137, 137-138); the reorder alone had made the serial classroom node 133 and bin-level 139. \
Measured on the 32-bit port after both passes (`CIVICEDGE_MICROPYTHON32=... scripts/bench heap`, 2026-11-23): \
plain MQTT 97 KB, within the ESP32's 100 KB (103 KB before this session's passes)."""
