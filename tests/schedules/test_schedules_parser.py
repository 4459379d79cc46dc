"""crontab field syntax: numbers, ranges, steps, lists, names, and the errors for bad ones."""

from __future__ import annotations

import pytest

from celeriac.schedules import ParseException, crontab, crontab_parser


@pytest.mark.parametrize(
    ("max_", "min_", "spec", "expected"),
    [
        (60, 0, "*/15", {0, 15, 30, 45}),
        (60, 0, "5", {5}),
        (60, 0, "1,2,5", {1, 2, 5}),
        (60, 0, "1-5", {1, 2, 3, 4, 5}),
        (60, 0, "1-30/5", {1, 6, 11, 16, 21, 26}),
        (60, 0, "55-3", {55, 56, 57, 58, 59, 0, 1, 2, 3}),  # wraps around
        (60, 0, "50/4", {50, 54, 58}),  # N/step is N-max/step
        (60, 0, "1,13,30-45,50-59/2", {1, 13, *range(30, 46), 50, 52, 54, 56, 58}),
        (24, 0, "*/4", {0, 4, 8, 12, 16, 20}),
        (24, 0, "0,8-17/2", {0, 8, 10, 12, 14, 16}),
        (7, 0, "*", set(range(7))),
        (31, 1, "*/3", {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
        (12, 1, "*/2", {1, 3, 5, 7, 9, 11}),
        (12, 1, "2-12/2", {2, 4, 6, 8, 10, 12}),
        (12, 1, "jan,Jul,DECEMBER", {1, 7, 12}),
        (12, 1, "nov-feb", {11, 12, 1, 2}),
        (7, 0, "mon-fri", {1, 2, 3, 4, 5}),
        (7, 0, "sun,Saturday", {0, 6}),
        (60, 0, " 1 , 2 ", {1, 2}),
    ],
)
def test_parser_expands(max_: int, min_: int, spec: str, expected: set[int]) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ("", ParseException, "empty part"),
        ("1,,2", ParseException, "empty part"),
        ("*/", ParseException, "empty step"),
        ("*/0", ParseException, "positive integer"),
        ("*/x", ParseException, "positive integer"),
        ("-1", ParseException, "invalid expression"),
        ("1-5/2/3", ParseException, "invalid expression"),
        ("60", ValueError, "expected 0-59"),
        ("10-60", ValueError, "expected 0-59"),
        ("moon", ParseException, "day name"),
        ("1.5", ParseException, "invalid expression"),
    ],
)
def test_parser_rejects(spec: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        crontab_parser(60).parse(spec)


def test_parse_exception_is_a_value_error() -> None:
    assert issubclass(ParseException, ValueError)
    assert crontab_parser.ParseException is ParseException


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (7, {0}),
        ("7", {0}),
        ([0, 7], {0}),
        ("sun", {0}),
        ("5-7", {5, 6, 0}),
        ("fri-sun", {5, 6, 0}),
        ("fri-mon", {5, 6, 0, 1}),
        ("sat-1", {6, 0, 1}),
        ("*/2", {0, 2, 4, 6}),
        ("0-7", set(range(7))),
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("*", set(range(7))),
    ],
)
def test_day_of_week_takes_sunday_as_0_and_7(
    spec: int | str | list[int], expected: set[int]
) -> None:
    assert crontab(day_of_week=spec).day_of_week == expected


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"minute": 60}, "minute: invalid value 60, expected 0-59"),
        ({"hour": [1, 24]}, "hour: invalid value 24, expected 0-23"),
        ({"hour": "25"}, "hour='25'.*expected 0-23"),
        ({"day_of_week": 8}, "expected 0-7"),
        ({"day_of_week": "8"}, "expected 0-7"),
        ({"day_of_month": 0}, "expected 1-31"),
        ({"month_of_year": "13"}, "expected 1-12"),
        ({"day_of_month": 30, "month_of_year": 2}, "never occurs"),
        ({"day_of_month": "31", "month_of_year": "apr,jun,sep,nov"}, "never occurs"),
    ],
)
def test_crontab_rejects_bad_fields(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        crontab(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.5, True, object()])
def test_crontab_rejects_bad_types(bad: object) -> None:
    with pytest.raises(TypeError, match="int, a str or an iterable"):
        crontab(minute=bad)  # type: ignore[arg-type]


def test_fields_accept_ints_strings_and_iterables() -> None:
    c = crontab(minute=[0, 30], hour=range(9, 12), day_of_week={1, 3}, day_of_month="*")
    assert c.minute == {0, 30}
    assert c.hour == {9, 10, 11}
    assert c.day_of_week == {1, 3}
    assert c.day_of_month == set(range(1, 32))
    assert c.month_of_year == set(range(1, 13))
    assert crontab(None, None).minute == set(range(60))


def test_feb_29_only_is_allowed() -> None:
    assert crontab(0, 0, day_of_month=29, month_of_year=2).day_of_month == {29}


def test_from_string() -> None:
    c = crontab.from_string("*/5 9-17 1,15 jan-jun mon-fri")
    assert c == crontab("*/5", "9-17", "mon-fri", "1,15", "jan-jun")
    assert repr(c) == "<crontab: */5 9-17 1,15 jan-jun mon-fri (m/h/dM/MY/d)>"
    assert crontab.from_string("  0   3 * * *  ").hour == {3}
    assert crontab.from_string("0 3 * * *", tz="Europe/Berlin").tz.key == "Europe/Berlin"  # type: ignore[attr-defined]


@pytest.mark.parametrize("line", ["* * * *", "* * * * * *", ""])
def test_from_string_wants_five_fields(line: str) -> None:
    with pytest.raises(ValueError, match="expected 5 fields"):
        crontab.from_string(line)
