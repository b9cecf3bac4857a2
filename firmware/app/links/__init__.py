"""The node's links to the gateway: ``serial`` (frames over a UART), ``mqtt`` (WiFi and an
MQTT broker) and ``lorawan`` (an AT-command modem). Each has ``open()`` (connect/join; False
when the way is shut now), ``deliver(log)`` (send pending records, trim what was confirmed;
returns how many) and ``counters``. ``framed.FramedLink`` is what serial and MQTT share."""
