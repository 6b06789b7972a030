"""The rule language and its compiler: what compiles, and every bad input."""

import pytest

from controller.cli.rulescmd import site_catalog
from controller.core import table as T
from controller.core.modes import MODE_NAMES
from controller.core.table import Table, TableError
from controller.core.ticks import MAX_SPAN
from controller.devtools.bench.rules import compile_text
from rules.compiler import compile_files
from rules.errors import RuleSourceError
from rules.language import default_sources
from rules.payload import decode_payload


def rule(when, rid="r1", extra=""):
    return '[[rule]]\nid = "{}"\nwhen = "{}"\nseverity = "alarm"\n{}\n'.format(rid, when, extra)


def problems(text):
    with pytest.raises(RuleSourceError) as e:
        compile_text(text)
    return e.value.diagnostics


def one_problem(text):
    diags = problems(text)
    assert len(diags) == 1, [str(d) for d in diags]
    return diags[0]


def test_format_constants_match_the_core():
    assert T.MODES == MODE_NAMES
    assert T.MAX_WINDOW_MS == MAX_SPAN


def test_default_packs_compile_and_round_trip_through_cbor():
    catalog, site = site_catalog(None)
    compiled = compile_files(default_sources([]), site)
    ids = [r.id for r in compiled.rules]
    assert "door_forced.io" in ids and "module_removed.bms2" in ids and "disk_low" in ids
    data = decode_payload(compiled.encode(), "t")
    table = Table(data, catalog.size)
    assert table.ids == ids and table.catalog == catalog.digest()


def test_templated_rule_is_instantiated_per_device_of_its_class():
    c = compile_text('[[rule]]\nid = "hot"\ndevices = "battery"\nwhen = "{dev}.temp_max_dc > 450"\n'
                     'severity = "warning"\n')
    assert [r.id for r in c.rules] == ["hot.bms1", "hot.bms2"]
    assert [r.when_text for r in c.rules] == ["bms1.temp_max_dc > 450", "bms2.temp_max_dc > 450"]


def test_syntax_error_names_file_line_column_and_rule():
    d = one_problem('\n' + rule("io.door_open and and io.tamper", rid="door"))
    assert (d.line, d.rule_id) == (4, "door")
    assert d.col == len('when = "io.door_open and ') + 1
    assert "syntax error" in d.message
    assert str(d).startswith(d.path + ":4:{}: rule 'door': syntax error".format(d.col))


def test_syntax_error_on_a_later_line_of_a_multiline_expression():
    d = one_problem('[[rule]]\nid = "m"\nseverity = "info"\nwhen = """\nio.door_open and\n  io.tamper ==\n"""\n')
    assert d.line in (6, 7) and d.rule_id == "m"


@pytest.mark.parametrize("when", ['""', '"   "', '"""\n\n"""'])
def test_an_empty_when_is_a_problem_not_a_rule_silently_dropped(when):
    d = one_problem('[[rule]]\nid = "e"\nseverity = "warning"\nwhen = {}\n'.format(when))
    assert "'when' is empty" in d.message and d.rule_id == "e"


def test_toml_syntax_error_has_line_and_column():
    d = one_problem('[[rule]]\nid = "x\n')
    assert d.line == 2 and d.col > 0 and "TOML syntax" in d.message


def test_unknown_signal_suggests_the_closest_names():
    d = one_problem(rule("io.door_opn"))
    assert "unknown signal 'io.door_opn'" in d.message and "did you mean 'io.door_open'" in d.message
    assert d.col == len('when = "') + 1


def test_unknown_signal_in_a_template_names_the_instance_and_exact_column():
    d = problems('[[rule]]\nid = "t"\ndevices = "battery"\nwhen = "{dev}.online and {dev}.temp_mx_dc > 1"\n'
                 'severity = "info"\n')
    assert [x.rule_id for x in d] == ["t.bms1", "t.bms2"]
    assert d[0].col == len('when = "{dev}.online and ') + 1
    assert "did you mean 'bms1.temp_max_dc'" in d[0].message


@pytest.mark.parametrize("when, reason", [
    ("io.door_open.real", "attribute access is not allowed"),
    ("io.tamper[0]", "subscripts"),
    ("(lambda: 1)()", "calls outside"),
    ("open(1)", "function 'open' is not part of the rule language"),
    ("math.floor(io.temp_dc) > 1", "calls outside"),
    ("io.tamper if io.door_open else io.door_bolt", "is not allowed"),
    ("io.temp_dc / 2 > 1", "operator /"),
    ("bms1.temp_max_dc > 45.5", "write 455"),
    ("io.door_open == 450", "is a bool"),
    ("io.temp_dc", "must be a condition"),
    ("io.vib_rms_mg and io.tamper", "'and' needs a condition"),
    ("bms1.pack_mv > bms1.temp_max_dc", "mixes units"),
    ("bms1.serial > 5", "has no order"),
    ("count(io.door_open, '1h') > 20", "saturates at 16"),
    ("mode('armd')", "unknown mode 'armd' (did you mean 'armed'"),
    ("held(io.door_open, 5)", "duration in quotes"),
    ("held(io.door_open, '-5s')", "negative duration"),
    ("within(io.door_open, '0s')", "longer than 0"),
    ("held(io.door_open, '7d')", "longest window"),
    ("bit(io.temp_dc, 3)", "bits or code signal"),
    ("io.door_open in io.tamper", "comparison 'in'"),
    ("'text'", "only whole-number literals"),
])
def test_disallowed_constructs_are_rejected_with_the_reason(when, reason):
    when = when.replace('"', "'")
    d = one_problem(rule(when))
    assert reason in d.message, d.message


def test_undefined_schedule_is_an_error_listing_the_defined_ones():
    d = one_problem(rule("schedule('nite')"))
    assert "schedule 'nite' is never defined" in d.message and "did you mean 'night'" in d.message


def test_a_rule_that_needs_a_schedule_is_compiled_only_where_the_site_defines_it():
    # The demo catalog defines night, shift_change and maintenance (docs/rules.md).
    here = rule("schedule('night') and io.door_open", "at_night", 'needs_schedule = "night"')
    assert [r.id for r in compile_text(here).rules] == ["at_night"]
    # A site without the window: no rule and no error, as a class with no device yields none.
    away = rule("schedule('dusk') and io.door_open", "at_dusk", 'needs_schedule = "dusk"')
    assert [r.id for r in compile_text(away + rule("io.door_open")).rules] == ["r1"]
    # Without needs_schedule the same rule is the usual error.
    assert "schedule 'dusk' is never defined" in one_problem(rule("schedule('dusk') and io.door_open")).message
    assert "'needs_schedule' is a schedule name" in one_problem(
        rule("io.door_open", extra='needs_schedule = "Night time"')).message


def test_negative_for_duration_is_an_error():
    d = one_problem(rule("io.tamper", extra='for = "-5s"'))
    assert "negative duration" in d.message and d.line == 5


def test_duplicate_rule_id_points_at_the_first():
    d = one_problem(rule("io.tamper") + rule("io.door_open"))
    assert "duplicate rule id" in d.message and ":1)" in d.message and d.line == 7


def test_bad_keys_severity_actions_and_class_all_reported_at_once():
    text = ('[[rule]]\nid = "a"\nwhen = "io.tamper"\nseverity = "loud"\nactions = ["siren"]\n'
            'clear_whenn = "io.tamper"\n\n[[rule]]\nid = "b"\nwhen = "{dev}.online"\nseverity = "info"\n'
            'devices = "batery"\n\n[[rule]]\nid = "Bad Id"\nwhen = "io.tamper"\nseverity = "info"\n')
    msgs = [str(d) for d in problems(text)]
    assert any("severity 'loud' is not one of info" in m for m in msgs)
    assert any("unknown action 'siren'" in m for m in msgs)
    assert any("unknown key 'clear_whenn' (did you mean 'clear_when'" in m for m in msgs)
    assert any("unknown device class 'batery' (did you mean 'battery'" in m for m in msgs)
    assert any("every rule needs an id" in m for m in msgs)


def test_dev_placeholder_without_devices_is_an_error():
    assert "no 'devices' class" in one_problem(rule("{dev}.online")).message


def test_latch_and_clear_when_together_is_an_error():
    d = one_problem(rule("io.tamper", extra='latch = true\nclear_when = "not io.tamper"'))
    assert "latched rule cannot also have clear_when" in d.message


def test_signal_compared_with_constant_is_fused():
    catalog, _site = site_catalog(None)
    c = compile_text(rule("bms1.temp_max_dc > 450 and 10 < io.temp_dc and not io.tamper"))
    assert c.data["rules"][0][4] == [
        T.OP_SIG_GT_K, catalog.index["bms1.temp_max_dc"], 450,
        T.OP_SIG_GT_K, catalog.index["io.temp_dc"], 10, T.OP_AND,
        T.OP_NOT_SIG, catalog.index["io.tamper"], T.OP_AND]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["rules"][0][4].__setitem__(0, 99), "unknown opcode"),
    (lambda d: d["rules"][0][4].__setitem__(1, 10 ** 6), "outside the image"),
    (lambda d: d["rules"][0].__setitem__(3, T.FLAG_CLEAR_WHEN), "must leave 2"),
    (lambda d: d.__setitem__("format", 9), "not a rule table"),
])
def test_table_structure_is_checked_on_load(mutate, message):
    catalog, _site = site_catalog(None)
    data = decode_payload(compile_text(rule("io.tamper")).encode(), "t")
    mutate(data)
    with pytest.raises(TableError, match=message):
        Table(data, catalog.size)


def test_class_max_of_a_class_with_one_device_is_its_plain_signal():
    air = compile_text(rule("rate(class_max('io', 'temp_dc'), '10m') > 10")).rules[0]
    plain = compile_text(rule("rate(io.temp_dc, '10m') > 10")).rules[0]
    assert (air.code, air.signals) == (plain.code, plain.signals)


def test_class_max_of_a_bool_with_one_device_is_its_plain_signal():
    door = compile_text(rule("fell(class_max('io', 'door_open') == 1)")).rules[0]
    plain = compile_text(rule("fell(io.door_open == 1)")).rules[0]
    assert (door.code, door.signals) == (plain.code, plain.signals)


@pytest.mark.parametrize("when, message", [
    ("moved(io.tilt_mdeg) > 750", "moved() takes two arguments: a number and the condition"),
    ("moved(io.door_open, mode('armed')) > 0", "moved() needs a number"),
    ("moved(io.tilt_mdeg, io.tilt_mdeg) > 750", "moved()'s second argument needs a condition"),
    ("moved(5, mode('armed')) > 0", "moved() of a constant is always 0"),
    ("moved(io.tilt_mdeg, mode('armed')) > bms1.temp_max_dc", "mixes units"),
])
def test_moved_problems_name_what_to_write(when, message):
    assert message in one_problem(rule(when)).message


def test_moved_is_guarded_by_the_devices_of_both_its_arguments():
    catalog, _site = site_catalog(None)
    compiled = compile_text(rule("moved(io.tilt_mdeg, bms1.online and bms1.soc_pct > 5) > 750"))
    (guard,) = compiled.data["guards"]
    assert guard[1:] == sorted([catalog.index["io.online"], catalog.index["bms1.online"]])


@pytest.mark.parametrize("when, message", [
    ("class_max('bateries', 'temp_max_dc') > 10", "unknown device class 'bateries'"),
    ("class_max('battery', 'temp_dc') > 10", "devices of class 'battery' have no signal 'temp_dc' (bms1 has none)"),
    ("class_max('io') > 10", 'class_max() takes a device class and a signal name, like class_max("io", "temp_dc")'),
    ("class_max(io.temp_dc) > 10", "class_max() takes names in quotes"),
    ("class_max('battery', 'serial') > 10", "class_max() needs a number"),
])
def test_class_max_problems_name_what_to_write(when, message):
    assert message in one_problem(rule(when)).message
