"""The gateway's own GPIO inputs, read every scan: the mains sense and the
enclosure tamper switch (docs/config.md, "Mains sense", "Enclosure tamper").

Each is a contact on a gateway GPIO input (``PinInput``: 1 while the contact
is closed) written into its ``sys.*`` signals each scan.  A section left out
fits no pin and leaves its signals at 0.

The mains sense (``[mains]``): a mains-sense relay (or an optocoupled
mains-presence module) at the site's incoming supply, upstream of the
cabinet's fuse, closes a contact while the mains are present.  The gateway
rides through an outage on its own backup, so it reads the input through the
whole outage, while the cabinet's I/O module, fed from the cabinet's feed, is
silent.  ``sys.mains_up`` and ``sys.mains_down``: exactly one is 1 once the
pin is read, both 0 while the mains are unknown (no mains sense, or before
the first scan), so a rule that relaxes on ``sys.mains_down`` stays strict
on a site without one.

The enclosure tamper switch (``[tamper]``): usually normally closed, closed
while the gateway's lid is on; ``sys.tamper`` is 1 while it is open, so a cut
wire reads as an opened enclosure.  Without one ``sys.tamper`` stays 0 and
``gateway_tamper`` cannot fire.
"""

from __future__ import annotations

from controller.core.catalog import Catalog
from controller.gateway.settings import ContactSettings, GatewaySettings
from drivers.gpio import PinInput, make_factory


class ContactInput:
    """One contact written into signals each scan: ``targets`` are
    ``(image index, when_open)``; each signal is 1 while the contact is
    closed, or while it is open if ``when_open``."""

    def __init__(self, settings: ContactSettings, factory, targets: list[tuple[int, int]]):
        self.pin = PinInput(settings.gpio, settings.active_high, factory)
        self.targets = targets

    def fill(self, image: list[int]) -> None:
        closed = self.pin.read()
        for index, when_open in self.targets:
            image[index] = closed ^ when_open

    def close(self) -> None:
        self.pin.close()


class GatewayInputs:
    """The configured contacts by section name (``mains``, ``tamper``)."""

    def __init__(self, settings: GatewaySettings, catalog: Catalog):
        factory = make_factory(settings.pin_factory)
        index = catalog.index
        self.contacts: dict[str, ContactInput] = {}
        try:
            if settings.mains is not None:
                self.contacts["mains"] = ContactInput(settings.mains, factory, [(index["sys.mains_up"], 0),
                                                                                (index["sys.mains_down"], 1)])
            if settings.tamper is not None:
                self.contacts["tamper"] = ContactInput(settings.tamper, factory,
                                                       [(index["sys.tamper"], int(settings.tamper.normally_closed))])
        except Exception:
            self.close()        # the pins claimed before the one that failed
            raise

    def fill(self, image: list[int]) -> None:
        for contact in self.contacts.values():
            contact.fill(image)

    def close(self) -> None:
        for contact in self.contacts.values():
            contact.close()
