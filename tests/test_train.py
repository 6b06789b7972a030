"""The trainer: incidents are excluded (and said so), the model file is small."""

import json
import subprocess
import sys

from controller.core.anomaly import FEATURES, HOURS, N_FEATURES
from tests.scen_helpers import scenario_text

BURST = """
[[process]]
kind = "wind"

[[action]]
kind = "vibration"
at = "+1h"
rms_mg = 3000
peak_mg = 9000
duration = "30s"
"""
LABEL = '\n[[incident]]\nkind = "tamper"\nstart = "+1h"\nend = "+1h1m"\n'


def write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(scenario_text(body, "3h"))
    return str(p)


def train_cli(*args):
    return subprocess.run([sys.executable, "-m", "controller.cli.main", "model", "train", *args],
                          capture_output=True, text=True)


def test_labelled_incidents_are_excluded_and_reported(tmp_path):
    labelled = write(tmp_path, "labelled.toml", BURST + LABEL)
    unlabelled = write(tmp_path, "unlabelled.toml", BURST)
    r = train_cli(labelled, "-o", str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr
    assert "labelled.toml: excluded 1 labelled incident(s) (tamper) from training" in r.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert train_cli(unlabelled, "-o", str(tmp_path / "b.json")).returncode == 0
    b = json.loads((tmp_path / "b.json").read_text())
    vib = FEATURES.index("vib")
    assert a["trained"]["excluded_windows"] > 12 and b["trained"]["excluded_windows"] == 0
    assert a["base"][vib] < 100 < b["base"][vib]     # the burst was learned only without its label
    assert len(bytes.fromhex(a["hi"])) == HOURS * N_FEATURES
    assert (tmp_path / "a.json").stat().st_size <= 16 * 1024


def test_training_from_a_recorded_trace_with_labels(tmp_path):
    from controller.core.trace import header_line, scan_line
    from simulator.scenariofile import load
    from simulator.world import CabinetWorld
    scn = load(write(tmp_path, "s.toml", BURST))
    world = CabinetWorld(scn, scn.cabinets[0])
    config_cls = __import__("controller.core.step", fromlist=["CoreConfig"]).CoreConfig
    lines = [header_line(world.catalog, config_cls(), [], {"incidents": [[3600000, 3660000, "tamper"]]})]
    names = world.catalog.names
    for t, changes, _cmds in world.stream():
        lines.append(scan_line(t, {names[i]: v for i, v in changes}, []))
    trace = tmp_path / "rec.trace"
    trace.write_text("\n".join(lines) + "\n")
    r = train_cli(str(trace), "-o", str(tmp_path / "m.json"))
    assert r.returncode == 0 and "rec.trace: excluded 1 labelled incident(s)" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["base"][FEATURES.index("vib")] < 100


def test_unreadable_input_is_a_message(tmp_path):
    r = train_cli(str(tmp_path / "missing.trace"), "-o", str(tmp_path / "m.json"))
    assert r.returncode == 1 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_one_cabinets_baseline(tmp_path):
    two = scenario_text('\n[[cabinet]]\nid = "c2"\n\n[[process]]\nkind = "truck"\ncabinets = ["c2"]\nper_hour = 60.0\n')
    p = tmp_path / "two.toml"
    p.write_text(two)
    assert train_cli(str(p), "-o", str(tmp_path / "c1.json"), "--cabinet", "c1").returncode == 0
    assert train_cli(str(p), "-o", str(tmp_path / "c2.json"), "--cabinet", "c2").returncode == 0
    peak = FEATURES.index("peak")
    c1 = json.loads((tmp_path / "c1.json").read_text())
    c2 = json.loads((tmp_path / "c2.json").read_text())
    assert c1["trained"]["windows"] == c2["trained"]["windows"] == 720
    assert c1["base"][peak] < 60 < c2["base"][peak]
