"""The drivers' exception hierarchy."""


class DriverError(Exception):
    """Base of every error a driver reports to a person."""


class CoseError(DriverError):
    """A COSE message that is malformed or fails its MAC."""


class LockHeld(DriverError):
    """A lock file another live process holds (drivers/pidlock.py)."""

    def __init__(self, path, holder: str):
        self.path = path
        self.holder = holder
        super().__init__("{} is held by PID {}".format(path, holder))


class KeyFileError(DriverError):
    """A key file that is missing, malformed or too open."""


class PortError(DriverError):
    """A serial port that cannot be opened (the message lists the ports that exist)."""


class ProfileError(DriverError):
    """A device profile that fails validation; names file, line and register."""


class ModbusError(DriverError):
    """A Modbus transaction that did not return a good answer."""


class ModbusTimeout(ModbusError):
    """No complete answer within the device's timeout."""


class ModbusCrcError(ModbusError):
    """An answer whose CRC does not match."""


class ModbusFrameError(ModbusError):
    """An answer of the wrong address, function, length or content."""


class ModbusPortLost(ModbusError):
    """The serial port failed under a transaction: adapter unplugged, cable cut at the
    adapter, simulator gone.  The poller reopens the port (drivers/modbus/poller.py)."""


class ModbusException(ModbusError):
    """The slave answered with a Modbus exception code."""

    def __init__(self, address: int, function: int, code: int) -> None:
        super().__init__("slave {} answered function {} with exception code {}".format(
            address, function, code))
        self.code = code


class BusError(DriverError):
    """A bus poller set up or used in a way that cannot work (names bus and device)."""
