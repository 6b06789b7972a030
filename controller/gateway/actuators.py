"""The output image, driven: GPIO pins through gpiozero, Modbus relay coils,
or MQTT commands to a third-party system (a VMS's camera preset, a
lighting controller) on the cabinet LAN's broker.

``OutputBank.apply(outputs)`` runs right after every scan and only acts on
changes: a pin is set at once (microseconds); a coil write is queued to
its bus thread, and an MQTT command to the LAN link's thread
(controller/gateway/lanlink.py), so the scan loop never waits for a bus or
a network.  Coil writes come
back as bus events: a readback that disagrees (``write_mismatch``) or a
write that fails is a fault the loop turns into a core FAULT command.

Safe state (docs/architecture.md): on shutdown and before the first scan
every output is off except the battery lock, which keeps its last value,
so an incident's lock survives a restart.  After a crash (SIGKILL, power
cut) GPIO pins fall back to the board's reset state (off) and coils keep
what they were last written; the restarted gateway restores the lock from
its persisted state at once.
"""

from __future__ import annotations

from typing import Protocol

from controller.core.outputs import N_OUTPUTS, OUTPUT_NAMES, OUT_LED, safe_state
from controller.gateway.settings import OutputSettings
from drivers.gpio import PatternLed, PinOutput, make_factory


class Output(Protocol):
    def set(self, value: int) -> None: ...
    def close(self) -> None: ...


class CoilOutput:
    """One logical output on a relay-module coil, written through its bus poller."""

    def __init__(self, poller, device: str, coil: str):
        self.poller = poller
        self.device = device
        self.coil = coil
        self.value = -1
        self.pending: dict[int, int] = {}   # write token -> value written

    def set(self, value: int) -> None:
        if value != self.value:
            self.value = value
            token = self.poller.write_coils(self.device, {self.coil: value})
            self.pending[token] = value

    def close(self) -> None:
        pass


class MqttOutput:
    """One logical output as a retained MQTT command: ``on`` for 1, ``off`` for 0."""

    def __init__(self, link, topic: str, on: str, off: str):
        self.link = link
        self.topic = topic
        self.payloads = (off.encode(), on.encode())

    def set(self, value: int) -> None:
        self.link.send(self.topic, self.payloads[1 if value else 0])

    def close(self) -> None:
        pass


class OutputBank:
    def __init__(self, outputs: list[Output | None]):
        assert len(outputs) == N_OUTPUTS
        self.outputs = outputs
        self.current = [-1] * N_OUTPUTS

    def apply(self, values: list[int]) -> None:
        if values == self.current:   # most scans change no output: one compare at C speed
            return
        for i in range(N_OUTPUTS):
            v = values[i]
            if v != self.current[i]:
                self.current[i] = v
                out = self.outputs[i]
                if out is not None:
                    out.set(v)

    def safe(self, lock: int) -> None:
        self.apply(safe_state(lock))

    def coil_outputs(self) -> list[tuple[str, CoilOutput]]:
        return [(OUTPUT_NAMES[i], o) for i, o in enumerate(self.outputs) if isinstance(o, CoilOutput)]

    def close(self) -> None:
        for out in self.outputs:
            if out is not None:
                out.close()


def build_bank(outputs: dict[str, OutputSettings], pin_factory_name: str, pollers_by_device: dict,
               lan=None) -> OutputBank:
    """Outputs as the site config maps them (docs/config.md); ``lan`` is the
    LAN link that MQTT outputs publish through (the config has one if any
    output needs it)."""
    factory = make_factory(pin_factory_name)
    outs: list[Output | None] = [None] * N_OUTPUTS
    for i, name in enumerate(OUTPUT_NAMES):
        spec = outputs.get(name)
        if spec is None:
            continue
        if spec.gpio >= 0:
            cls = PatternLed if i == OUT_LED else PinOutput
            outs[i] = cls(spec.gpio, spec.active_high, factory)
        elif spec.mqtt_topic:
            outs[i] = MqttOutput(lan, spec.mqtt_topic, spec.on, spec.off)
        else:
            poller = pollers_by_device[spec.device]
            outs[i] = CoilOutput(poller, spec.device, spec.coil)
    return OutputBank(outs)
