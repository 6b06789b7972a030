"""Logical outputs, and the gateway's inputs (mains sense, enclosure tamper),
on GPIO pins through gpiozero, over a swappable pin factory.

The same code drives real pins on the gateway (gpiozero's default factory)
and gpiozero's MockFactory in tests and the demo, chosen by config
(``[gpio] pin_factory``), never by ``if`` elsewhere.  The status LED shows
the core's pattern code as a blink pattern, so a technician reads the mode
from across the yard.
"""

from __future__ import annotations

import warnings

from gpiozero import LED, BadPinFactory, DigitalInputDevice, DigitalOutputDevice, PinFactoryFallback
from gpiozero.pins.mock import MockFactory

from drivers.errors import DriverError

# (on seconds, off seconds) per LED pattern code from
# controller/core/outputs.py; None = steady on, 0 = off.
LED_PATTERNS = {
    0: 0,
    1: (0.1, 1.9),   # heartbeat: disarmed
    2: (0.5, 0.5),   # slow blink: exit or entry delay
    3: None,         # steady: armed
    4: (1.5, 0.5),   # mostly on: maintenance
    5: (0.1, 0.1),   # fast blink: alarm
    6: (0.1, 0.4),   # flicker: fault
}


class GpioError(DriverError):
    """A GPIO pin that cannot be claimed."""


def make_factory(name: str):
    """The pin factory for ``[gpio] pin_factory``: "default" or "mock"."""
    if name == "mock":
        return MockFactory()
    return None  # gpiozero picks the platform's factory (lgpio on a Pi 5, …)


def _claim(make, pin: int, what: str):
    """A gpiozero device on ``pin``; a machine without GPIO is named as such, with the fix."""
    try:
        with warnings.catch_warnings():     # gpiozero warns once per factory it tries: the error says it all
            warnings.simplefilter("ignore", PinFactoryFallback)
            return make()
    except BadPinFactory:
        raise GpioError("cannot use GPIO{} for {}: this machine has no GPIO (no gpiozero pin factory "
                        "loads); on a bench or against `cabguard sim` set [gpio] pin_factory = \"mock\" "
                        "in the site config (docs/config.md)".format(pin, what)) from None
    except Exception as e:  # gpiozero raises several types for unusable pins
        raise GpioError("cannot use GPIO{} for {} ({}): check the pins of [outputs], [mains] and [tamper] "
                        "and that the service user is in the gpio group".format(pin, what, e)) from None


class PinOutput:
    """An on/off output (siren, strobe, lock relay) on one GPIO pin."""

    def __init__(self, pin: int, active_high: bool, factory=None):
        self.device = _claim(lambda: DigitalOutputDevice(pin, active_high=active_high, initial_value=False,
                                                         pin_factory=factory), pin, "an output")
        self.value = 0

    def set(self, value: int) -> None:
        if value != self.value:
            self.value = value
            self.device.value = bool(value)

    def readback(self) -> int:
        return int(bool(self.device.value))

    def close(self) -> None:
        self.device.close()


class PinInput:
    """A contact on one GPIO pin (the mains sense's relay, the enclosure's
    tamper switch): 1 while it is active (closed).  ``active_high``: active
    when the pin is high (pulled down); otherwise when it is low (pulled up, a contact to ground)."""

    def __init__(self, pin: int, active_high: bool, factory=None):
        self.device = _claim(lambda: DigitalInputDevice(pin, pull_up=not active_high, pin_factory=factory),
                             pin, "an input")

    def read(self) -> int:
        return int(self.device.value)

    def close(self) -> None:
        self.device.close()


class PatternLed:
    """The status LED, showing a pattern code as a blink pattern."""

    def __init__(self, pin: int, active_high: bool, factory=None):
        self.led = _claim(lambda: LED(pin, active_high=active_high, initial_value=False, pin_factory=factory),
                          pin, "the status LED")
        self.value = 0

    def set(self, code: int) -> None:
        if code == self.value:
            return
        self.value = code
        pattern = LED_PATTERNS.get(code, 0)
        if pattern == 0:
            self.led.off()
        elif pattern is None:
            self.led.on()
        else:
            on, off = pattern
            self.led.blink(on_time=on, off_time=off, background=True)

    def readback(self) -> int:
        return self.value

    def close(self) -> None:
        self.led.close()

