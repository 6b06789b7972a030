import pytest

from controller.console.commands import BY_NAME, CommandError, parse, parse_duration
from controller.core.events import CMD_MAINT_START, CMD_TEST_SIREN


def test_durations():
    assert parse_duration("90s") == 90000
    assert parse_duration("1h30m") == 5400000
    with pytest.raises(CommandError, match="like 90s, 30m"):
        parse_duration("30 min")


def test_one_duration_grammar_for_console_rules_and_scenarios():
    from rules.language import parse_duration as rule_duration
    from simulator.scenario import parse_duration as scenario_duration
    for text, ms in (("250ms", 250), ("1h30m", 5400000), ("2.5s", 2500), ("2d", 172800000), ("30s1m", 90000)):
        assert parse_duration(text) == rule_duration(text, allow_zero=False) == scenario_duration(text) == ms, text
    for text in ("5", "5x", "1h 30m", "", "s"):
        assert scenario_duration(text) is None
        with pytest.raises(CommandError):
            parse_duration(text)
        with pytest.raises(ValueError):
            rule_duration(text, allow_zero=True)


def test_maint_start_becomes_a_core_command():
    req = parse("maint start 45m", actor="ana")
    assert req.spec is BY_NAME["maint start"] and req.core_command() == (CMD_MAINT_START, 2700000)
    assert parse("test siren 3").core_command() == (CMD_TEST_SIREN, 3000)


def test_unknown_command_suggests_close_ones():
    with pytest.raises(CommandError, match="unknown command 'maint strat'.*Did you mean: maint start"):
        parse("maint strat 30m")
    with pytest.raises(CommandError, match="Did you mean: status"):
        parse("stauts")


def test_usage_on_missing_or_extra_arguments():
    with pytest.raises(CommandError, match="missing DURATION; usage: maint start DURATION"):
        parse("maint start")
    with pytest.raises(CommandError, match="too many arguments; usage: ack"):
        parse("ack now please")


def test_downlink_only_and_console_only_commands():
    assert parse("grant 30", source="downlink").args == {"minutes": 30}
    with pytest.raises(CommandError):
        parse("grant 30")
    with pytest.raises(CommandError):
        parse("signals", source="downlink")
