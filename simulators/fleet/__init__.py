"""The fleet runner: a simulated site end to end (``civicedge sim run SCENARIO.toml``)."""
