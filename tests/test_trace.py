import pytest

from controller.core.errors import TraceError
from controller.core.trace import replay_lines
from controller.devtools.sampletraces import night_trace
from tests.traces import random_trace


def test_same_trace_same_digest():
    lines = random_trace(11)
    assert replay_lines(lines).digest() == replay_lines(lines).digest()


def test_different_behaviour_different_digest():
    a = night_trace()
    b = [line.replace('"ack"', '"silence"') for line in a]
    assert replay_lines(a).digest() != replay_lines(b).digest()


@pytest.mark.parametrize("line, message", [
    ('{"t": 5, "set": {"io.dor_open": 1}}', "trace line 2: unknown signal 'io.dor_open'"),
    ('{"t": 5, "cmd": [["arn"]]}', "trace line 2: unknown command 'arn'"),
    ('{"t": "soon"}', "trace line 2: 't' must be a tick"),
    ('{"t": 5, "set": {"io.door_open": 1.5}}', "signal 'io.door_open' must be an integer"),
    ('{"t": 5, "cmd": [["maint_start", -3]]}', "command 'maint_start' needs a whole-number argument"),
    ('{"t": 5', "trace line 2: not valid JSON"),
])
def test_bad_scan_lines_name_the_line_and_the_problem(line, message):
    head = night_trace()[0]
    with pytest.raises(TraceError, match=message.replace("(", r"\(")):
        replay_lines([head, line])


def test_bad_header_and_empty_trace():
    with pytest.raises(TraceError, match="line 1: not a cabguard trace header"):
        replay_lines(['{"t": 1}'])
    with pytest.raises(TraceError, match="empty"):
        replay_lines([])
