"""Environment models: the physical truth that the simulated sensors measure.

Each model is ``Model(seed=0, **params)`` with ``model.at(wall_s) -> dict`` (also callable as
``model(wall_s)``, so it can be a ``SimI2CDevice``'s ``truth``). Keys carry their units. The
same seed gives the same values whatever the query pattern (see ``base``). ``wall_s`` is Unix
seconds read as UK local time without daylight saving.

| profile | model | keys the sensors read |
|---|---|---|
| classroom-co2 | ``ClassroomCO2`` | ``co2_ppm``, ``temperature_c``, ``rh_percent`` (SCD4x) |
| legionella-outlet | ``PipeOutlet`` | ``temperature_c`` (TMP117 on a pipe clamp) |
| street-no2 | ``StreetNO2`` | ``no2_ppb``, ``temperature_c`` (NO2-B43F + TMP117) |
| bin-level | ``StreetBin`` | ``distance_cm``, ``temperature_c`` (I2CXL ultrasonic) |
"""

from simulators.environment.bin import StreetBin
from simulators.environment.classroom import ClassroomCO2
from simulators.environment.pipe import PipeOutlet
from simulators.environment.street import StreetNO2
from simulators.environment.weather import OutdoorWeather

MODELS = {
    "classroom": ClassroomCO2,
    "pipe": PipeOutlet,
    "street": StreetNO2,
    "bin": StreetBin,
}


def build_environment(spec):
    """A model from a JSON-able spec ``{"model": "classroom"|"pipe"|"street"|"bin", ...kwargs}``.

    Raises ``ValueError`` naming the known models, or the bad argument."""
    spec = dict(spec)
    name = spec.pop("model", None)
    if name not in MODELS:
        raise ValueError("environment spec 'model' must be one of %s, got %r" % (", ".join(sorted(MODELS)), name))
    try:
        return MODELS[name](**spec)
    except TypeError as e:
        raise ValueError("environment %r: %s" % (name, e)) from None


__all__ = ["ClassroomCO2", "PipeOutlet", "StreetNO2", "StreetBin", "OutdoorWeather", "MODELS", "build_environment"]
