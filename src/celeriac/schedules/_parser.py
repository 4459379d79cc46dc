"""Parsing of crontab field expressions into sets of numbers."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["ParseException", "crontab_parser", "expand_cronspec"]

Cronspec = int | str | Iterable[int]

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FULL_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_FULL_MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)

# Name -> number, for both the short and the full English names.
_NAMES: dict[str, int] = {
    **{name: i for i, name in enumerate(DAY_NAMES)},
    **{name: i for i, name in enumerate(_FULL_DAY_NAMES)},
    **{name: i for i, name in enumerate(MONTH_NAMES, 1)},
    **{name: i for i, name in enumerate(_FULL_MONTH_NAMES, 1)},
}

# One comma-separated part: "*", "N", "N-M", each optionally followed by "/STEP".
_PART = re.compile(r"^(?:(?P<star>\*)|(?P<lo>\w+?)(?:-(?P<hi>\w+))?)(?:/(?P<step>\w*))?$", re.ASCII)


class ParseException(ValueError):
    """A crontab field expression could not be parsed.

    A subclass of :class:`ValueError`, so every bad crontab value can be caught as one.
    """


class crontab_parser:
    """Expand one crontab field expression into the set of numbers it stands for.

    ``max_`` is how many values the field has and ``min_`` the first one, so the
    field accepts ``min_ .. min_ + max_ - 1``: minutes are ``crontab_parser(60)``,
    hours ``crontab_parser(24)``, days of the week ``crontab_parser(7)`` (Sunday is 0),
    days of the month ``crontab_parser(31, 1)`` and months ``crontab_parser(12, 1)``.

    Grammar: ``groups := expr ("," expr)*``, ``expr := ("*" | number ["-" number])
    ["/" step]``, where a number is digits or an English day or month name (``mon``,
    ``monday``, ``jan``, ``january``, any case). A range whose end is below its start
    wraps around (``fri-mon`` is Friday to Monday). ``N/step`` means ``N-max/step``.

    >>> sorted(crontab_parser(60).parse("*/15"))
    [0, 15, 30, 45]
    >>> sorted(crontab_parser(12, 1).parse("2-12/2"))
    [2, 4, 6, 8, 10, 12]
    """

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_

    @property
    def _highest(self) -> int:
        return self.min_ + self.max_ - 1

    def parse(self, spec: str) -> set[int]:
        """Return the set of numbers ``spec`` stands for; raise on a bad expression."""
        result: set[int] = set()
        for part in spec.split(","):
            result.update(self._parse_part(part.strip()))
        return result

    def _parse_part(self, part: str) -> list[int]:
        if not part:
            raise ParseException("empty part in expression: expected e.g. '1,2' not '1,,2'")
        match = _PART.match(part)
        if match is None:
            raise ParseException(
                f"invalid expression {part!r}: expected '*', 'N', 'N-M' "
                f"optionally followed by '/STEP'"
            )
        star, lo, hi, step = match.group("star", "lo", "hi", "step")
        if star:
            values = list(range(self.min_, self.min_ + self.max_))
        else:
            first = self._number(lo)
            if hi is not None:
                values = self._span(first, self._number(hi))
            elif step is not None:
                values = list(range(first, self._highest + 1))
            else:
                values = [first]
        if step is None:
            return values
        return values[:: self._step(step, part)]

    def _span(self, first: int, last: int) -> list[int]:
        if last >= first:
            return list(range(first, last + 1))
        # A range running past the field's end wraps around to its start.
        return list(range(first, self._highest + 1)) + list(range(self.min_, last + 1))

    def _step(self, text: str, part: str) -> int:
        if not text:
            raise ParseException(f"empty step in expression {part!r}: expected '/N'")
        if not text.isdigit() or int(text) == 0:
            raise ParseException(
                f"invalid step {text!r} in expression {part!r}: expected a positive integer"
            )
        return int(text)

    def _number(self, text: str) -> int:
        if text.isdigit():
            value = int(text)
        else:
            try:
                value = _NAMES[text.lower()]
            except KeyError:
                raise ParseException(
                    f"invalid value {text!r}: expected a number, "
                    f"a day name (mon, monday) or a month name (jan, january)"
                ) from None
        if not self.min_ <= value <= self._highest:
            raise ValueError(f"value {text!r} out of range: expected {self.min_}-{self._highest}")
        return value


class _DayOfWeekParser(crontab_parser):
    """Day-of-week parser that also takes 7 for Sunday, as cron does."""

    def __init__(self) -> None:
        super().__init__(7, 0)

    @property
    def _highest(self) -> int:
        return 7

    def parse(self, spec: str) -> set[int]:
        return {day % 7 for day in super().parse(spec)}

    def _span(self, first: int, last: int) -> list[int]:
        # "sat-7" and "5-7" end on Sunday-as-7; wrapping uses the 0-6 week.
        if last >= first:
            return list(range(first, last + 1))
        return list(range(first, 7)) + list(range(0, last + 1))


def expand_cronspec(spec: Cronspec, field: str, max_: int, min_: int = 0) -> set[int]:
    """Expand an int, a string expression or an iterable of ints into a set of numbers."""
    day_of_week = field == "day_of_week"
    highest = 7 if day_of_week else min_ + max_ - 1
    if isinstance(spec, bool):
        raise TypeError(f"crontab {field} must be an int, a str or an iterable of ints, not a bool")
    if isinstance(spec, str):
        parser = _DayOfWeekParser() if day_of_week else crontab_parser(max_, min_)
        try:
            return parser.parse(spec)
        except ValueError as exc:
            raise type(exc)(f"crontab {field}={spec!r}: {exc}") from None
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, Iterable):
        values = set(spec)
    else:
        raise TypeError(
            f"crontab {field} must be an int, a str or an iterable of ints, "
            f"not {type(spec).__name__}"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not min_ <= value <= highest:
            raise ValueError(f"crontab {field}: invalid value {value!r}, expected {min_}-{highest}")
    return {value % 7 for value in values} if day_of_week else values
