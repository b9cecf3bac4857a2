"""Wire formats and record-level rules shared by the firmware (MicroPython) and the gateway
(CPython): quality flags now; the SenML-CBOR record profile, node frames and the LoRaWAN
pack codec with the node-firmware issue."""
