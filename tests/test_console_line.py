from hypothesis import given, strategies as st

from controller.console.line import LineEditor


def test_enter_variants_and_backspace():
    ed = LineEditor()
    fed = ed.feed(b"stat\x7fus\rhelp\r\nversion\n")
    assert fed.lines == ["staus", "help", "version"]
    assert fed.echo.startswith(b"stat\b \bus\r\n")


def test_ctrl_c_abandons_the_line_and_ctrl_u_clears():
    ed = LineEditor()
    fed = ed.feed(b"maint st\x03")
    assert fed.interrupted and fed.lines == []
    assert ed.feed(b"junk\x15ack\r").lines == ["ack"]


def test_overlong_line_is_cut_and_reported():
    ed = LineEditor(max_line=10)
    fed = ed.feed(b"a" * 50 + b"\rstatus\r")
    assert fed.overflowed and fed.lines == ["status"]


def test_binary_garbage_is_dropped():
    ed = LineEditor()
    assert ed.feed(bytes([0x00, 0xFF, 0x1B, 0x9B]) + b"help\r").lines == ["help"]


@given(st.binary(max_size=2000))
def test_never_crashes_and_lines_stay_printable_and_short(data):
    ed = LineEditor(max_line=64)
    for line in ed.feed(data).lines:
        assert len(line) <= 64 and line.isprintable()
