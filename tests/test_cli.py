import json
import subprocess
import sys

from controller.devtools.sampletraces import night_trace


def cabguard(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "controller.cli.main", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_unknown_subcommand_prints_usage_and_exits_2():
    r = cabguard("frobnicate")
    assert r.returncode == 2 and "usage: cabguard" in r.stderr


def test_help_lists_only_real_subcommands():
    r = cabguard("--help")
    assert r.returncode == 0
    for name in ("demo", "replay", "bench"):
        assert name in r.stdout


def test_replay_prints_digest_and_json(tmp_path):
    trace = tmp_path / "night.trace"
    trace.write_text("\n".join(night_trace()) + "\n")
    text = cabguard("replay", str(trace))
    assert text.returncode == 0 and "mode entry -> alarm" in text.stdout
    doc = json.loads(cabguard("replay", str(trace), "--json").stdout)
    assert doc["final_mode"] == "disarmed"
    assert doc["digest"] in text.stdout
    assert set(doc) >= {"scans", "events", "digest", "final_mode", "final_outputs", "timeline"}


def test_bad_trace_is_a_message_not_a_traceback(tmp_path):
    trace = tmp_path / "bad.trace"
    lines = night_trace()[:3] + ['{"t": 9, "set": {"io.doorr": 1}}']
    trace.write_text("\n".join(lines))
    r = cabguard("replay", str(trace))
    assert r.returncode == 1
    assert "bad.trace: trace line 4: unknown signal 'io.doorr'" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_trace_file():
    r = cabguard("replay", "/nonexistent/x.trace")
    assert r.returncode == 1 and "cannot read trace /nonexistent/x.trace" in r.stderr


def test_demo_plays_the_night_and_the_journal_verifies(tmp_path):
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "demo", "--seconds", "30", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "console: ana> maint start 30m  ->  ok" in out
    assert "rule door_forced.io raised (alarm)" in out
    assert "rule module_removed.bms2 raised (critical)" in out
    assert "battery output lock (relay.k1 coil): ENGAGED" in out
    assert "OK - every MAC and the whole chain check out" in out
    assert ", 0 rejected, 0 chain breaks" in out
    # nothing raised before the forced door: the crane and the visit are quiet
    before = out[:out.index("02:10  world:")]
    assert " raised (" not in before
    assert (tmp_path / "journal").is_dir() and (tmp_path / "site.toml").exists()
    # every incident of the night replays from its evidence record as the journal has it
    from drivers.keys import load_key
    from tests.test_incident_replay import replays_as_journaled, same_on_micropython
    done = replays_as_journaled(tmp_path / "journal", load_key(tmp_path / "keys" / "record.key"))
    assert done
    same_on_micropython(done)
