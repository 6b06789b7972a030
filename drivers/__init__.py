"""The edges of the world: serial/Modbus, register maps, GPIO, crypto, MQTT, clock.

Hardware is swappable the gpiozero way: a driver talks to a port or pin
factory chosen by config (real serial port, pseudo-terminal, in-process
simulator), never to an ``if`` scattered through the code.
"""
