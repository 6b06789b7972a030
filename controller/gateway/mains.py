"""The mains sense: the site's mains, read upstream of the cabinet's own feed.

A mains-sense relay (or an optocoupled mains-presence module) at the site's
incoming supply, upstream of the cabinet's fuse, closes a contact while the
mains are present; the contact is on a gateway GPIO input (``[mains]``).  The
gateway rides through an outage on its own backup, so it reads the input
through the whole outage, while the cabinet's I/O module, fed from the
cabinet's feed, is silent.  Each scan writes ``sys.mains_up`` and
``sys.mains_down``: exactly one is 1 once the pin is read, both 0 while the
mains are unknown (no mains sense, or before the first scan), so a rule that
relaxes on ``sys.mains_down`` stays strict on a site without one
(docs/config.md, "Mains sense").
"""

from __future__ import annotations

from controller.core.catalog import Catalog
from controller.gateway.settings import MainsSettings
from drivers.gpio import PinInput, make_factory


class MainsSense:
    def __init__(self, settings: MainsSettings, pin_factory: str, catalog: Catalog):
        self.pin = PinInput(settings.gpio, settings.active_high, make_factory(pin_factory))
        self.up_idx = catalog.index["sys.mains_up"]
        self.down_idx = catalog.index["sys.mains_down"]

    def fill(self, image: list[int]) -> None:
        up = self.pin.read()
        image[self.up_idx] = up
        image[self.down_idx] = 1 - up

    def close(self) -> None:
        self.pin.close()
