"""The portable core: signal image, modes, timers and ``step()``.

Everything under this package runs unchanged on CPython and MicroPython:
no I/O, no third-party imports, no dataclasses/enum/typing/abc, integers
only.  See docs/architecture.md.
"""
