"""cabguard: the battery-cabinet guard controller.

Kept import-free so that MicroPython can load ``controller.core`` without
pulling in any host-side module.
"""

__version__ = "0.1.0"
