"""Standard 5-field cron expressions, parsed and evaluated without dependencies.

Fields, in order: minute (0-59), hour (0-23), day of month (1-31),
month (1-12 or ``jan``-``dec``), day of week (0-7 or ``sun``-``sat``; 0 and 7
are both Sunday). Each field is a comma list of items, each item ``*``, ``N``,
``A-B``, ``*/S``, ``A-B/S`` or ``A/S`` (``A`` to the field's maximum, step S).
Names are case-insensitive. Macros: ``@hourly``, ``@daily`` (``@midnight``),
``@weekly``, ``@monthly``, ``@yearly`` (``@annually``).

Day rule (POSIX): when both day of month and day of week are restricted, a day
matching *either* fires; when only one is restricted, only it counts. A day
field is unrestricted when it is ``*`` or ``*/1``, and restricted otherwise
(``*/2`` included). That is also the rule of robfig/cron, the library behind
Kubeflow Pipelines' recurring runs, so a schedule fires on the same days
locally and on a cluster. (Vixie cron and cronie treat any field starting with
``*`` as unrestricted; the two only differ for ``*/N`` in a day field.)

Time zones: ``next_after`` takes a timezone-aware datetime and evaluates the
fields on the wall clock of *that datetime's* zone, so pass
``datetime.now(ZoneInfo('Europe/Paris'))`` for local-time cron or
``datetime.now(timezone.utc)`` for UTC. Around daylight-saving changes, wall
times that do not exist (spring forward) are skipped and wall times that occur
twice (fall back) fire once, at their first occurrence. Use ``zoneinfo`` or
``datetime.timezone`` tzinfo objects (pytz needs ``localize`` and is not
supported).
"""

import bisect
import dataclasses
import datetime
from typing import FrozenSet, List, Optional, Tuple

_MACROS = {
    '@yearly': '0 0 1 1 *',
    '@annually': '0 0 1 1 *',
    '@monthly': '0 0 1 * *',
    '@weekly': '0 0 * * 0',
    '@daily': '0 0 * * *',
    '@midnight': '0 0 * * *',
    '@hourly': '0 * * * *',
}

_MONTH_NAMES = {
    name: number for number, name in enumerate([
        'jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct',
        'nov', 'dec'
    ],
                                               start=1)
}
_WEEKDAY_NAMES = {
    name: number for number, name in enumerate(
        ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'])
}


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: Optional[dict] = None


_FIELDS = (
    _FieldSpec('minute', 0, 59),
    _FieldSpec('hour', 0, 23),
    _FieldSpec('day-of-month', 1, 31),
    _FieldSpec('month', 1, 12, _MONTH_NAMES),
    _FieldSpec('day-of-week', 0, 7, _WEEKDAY_NAMES),
)

# Longest month lengths, leap years included, to reject dates that never occur.
_MAX_DAYS = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31
}

# Feb 29 on a given weekday can be 28 years away; 400 covers every pattern.
_SEARCH_YEARS = 400

_ONE_MINUTE = datetime.timedelta(minutes=1)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if spec.names and text.lower() in spec.names:
        return spec.names[text.lower()]
    if not text.isdigit():
        raise ValueError(f'{text!r} is not a number' +
                         (' or a name' if spec.names else ''))
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise ValueError(f'{value} is outside {spec.low}-{spec.high}')
    return value


def _parse_item(item: str, spec: _FieldSpec) -> Tuple[List[int], bool]:
    """Parses one list item; returns its values and whether it is a wildcard."""
    if not item:
        raise ValueError('empty list item')
    range_part, slash, step_part = item.partition('/')
    step = 1
    if slash:
        if not step_part.isdigit() or int(step_part) == 0:
            raise ValueError(f'step {step_part!r} is not a positive number')
        step = int(step_part)
    if range_part == '*':
        low, high = spec.low, spec.high
    elif '-' in range_part:
        low_text, _, high_text = range_part.partition('-')
        low = _parse_value(low_text, spec)
        high = _parse_value(high_text, spec)
        if low > high:
            raise ValueError(f'range {range_part!r} runs backwards')
    else:
        low = _parse_value(range_part, spec)
        high = spec.high if slash else low
    return list(range(low, high + 1, step)), range_part == '*' and step == 1


def _parse_field(text: str, spec: _FieldSpec) -> Tuple[FrozenSet[int], bool]:
    values = set()
    wildcard = False
    for item in text.split(','):
        item_values, item_wildcard = _parse_item(item, spec)
        values.update(item_values)
        wildcard = wildcard or item_wildcard
    if spec.name == 'day-of-week' and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values), wildcard


def _render_field(values: FrozenSet[int], wildcard: bool) -> str:
    """Renders a field as plain numbers, lists, ranges and steps."""
    if wildcard:
        return '*'
    ordered = sorted(values)
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and all(
                b - a == step for a, b in zip(ordered, ordered[1:])):
            return f'{ordered[0]}-{ordered[-1]}/{step}'
    parts = []
    start = previous = ordered[0]
    for value in ordered[1:] + [None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f'{start}-{previous}')
        if value is not None:
            start = previous = value
    return ','.join(parts)


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    """A parsed 5-field cron expression.

    Attributes:
        expression: The text it was parsed from, macros included.
        minutes, hours, days, months, weekdays: Allowed values per field
            (weekdays 0-6, Sunday 0).
        days_restricted, weekdays_restricted: Whether the day-of-month and
            day-of-week fields restrict days (see the module docstring).
    """

    expression: str
    minutes: FrozenSet[int]
    hours: FrozenSet[int]
    days: FrozenSet[int]
    months: FrozenSet[int]
    weekdays: FrozenSet[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> 'CronSchedule':
        """Parses a 5-field cron expression or an ``@`` macro.

        Args:
            expression: For example ``'*/15 9-17 * * mon-fri'`` or ``'@daily'``.

        Returns:
            The parsed schedule.

        Raises:
            ValueError: On bad syntax, naming the field at fault, or when the
                day-of-month and month fields name a date that never occurs
                (such as ``30 2``).
        """
        text = expression.strip()
        if text.startswith('@'):
            if text.lower() not in _MACROS:
                raise ValueError(
                    f'unknown cron macro {text!r}; expected one of '
                    f'{", ".join(sorted(_MACROS))}')
            text = _MACROS[text.lower()]
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(
                f'cron expression {expression!r} has {len(fields)} fields; '
                'expected 5 (minute hour day-of-month month day-of-week)')
        parsed = []
        for field_text, spec in zip(fields, _FIELDS):
            try:
                parsed.append(_parse_field(field_text, spec))
            except ValueError as error:
                raise ValueError(
                    f'invalid {spec.name} field {field_text!r} in cron '
                    f'expression {expression!r}: {error}') from None
        (minutes, _), (hours, _), (days, day_star), (months,
                                                     _), (weekdays,
                                                          weekday_star) = parsed
        schedule = cls(expression,
                       minutes,
                       hours,
                       days,
                       months,
                       weekdays,
                       days_restricted=not day_star,
                       weekdays_restricted=not weekday_star)
        if schedule.days_restricted and not schedule.weekdays_restricted and (
                min(days) > max(_MAX_DAYS[m] for m in months)):
            raise ValueError(
                f'invalid day-of-month field {fields[2]!r} in cron expression '
                f'{expression!r}: no such day in month field {fields[3]!r}')
        return schedule

    def to_fields(self) -> str:
        """Returns the schedule as 5 numeric fields, macros and names expanded.

        Weekday 7 becomes 0, so the result suits parsers that only accept 0-6.
        """
        return ' '.join([
            _render_field(self.minutes,
                          len(self.minutes) == 60),
            _render_field(self.hours,
                          len(self.hours) == 24),
            _render_field(self.days, not self.days_restricted),
            _render_field(self.months,
                          len(self.months) == 12),
            _render_field(self.weekdays, not self.weekdays_restricted),
        ])

    def day_matches(self, date: datetime.date) -> bool:
        """Whether the day fields allow this date (month not checked)."""
        in_days = date.day in self.days
        # isoweekday: Monday 1 .. Sunday 7; cron: Sunday 0.
        in_weekdays = date.isoweekday() % 7 in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        if self.days_restricted:
            return in_days
        if self.weekdays_restricted:
            return in_weekdays
        return True

    def matches(self, moment: datetime.datetime) -> bool:
        """Whether the schedule fires at this minute (on its own wall clock)."""
        return (moment.minute in self.minutes and moment.hour in self.hours and
                moment.month in self.months and self.day_matches(moment.date()))

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """Returns the first firing time strictly after ``moment``.

        Args:
            moment: A timezone-aware datetime; the fields are read on the wall
                clock of its time zone.

        Returns:
            A datetime in the same time zone, on a whole minute.

        Raises:
            ValueError: If ``moment`` is naive, or nothing fires within 400
                years (only possible for contradictory day fields).
        """
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError('next_after needs a timezone-aware datetime, got '
                             f'{moment!r}')
        zone = moment.tzinfo
        wall = moment.replace(tzinfo=None, fold=0)
        while True:
            wall = self._next_wall_time(wall)
            candidate = wall.replace(tzinfo=zone)
            if not _exists(candidate):
                continue
            # Ambiguous wall times use fold=0, which can lie before `moment`
            # when `moment` is in the repeated hour; keep searching then.
            # Compared in UTC: Python compares same-zone datetimes by wall
            # time, ignoring fold.
            if _utc(candidate) > _utc(moment):
                return candidate

    def _next_wall_time(self, wall: datetime.datetime) -> datetime.datetime:
        """First matching naive wall time strictly after ``wall``."""
        t = wall.replace(second=0, microsecond=0) + _ONE_MINUTE
        months = sorted(self.months)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        limit_year = t.year + _SEARCH_YEARS
        while t.year <= limit_year:
            if t.month not in self.months:
                index = bisect.bisect_right(months, t.month)
                if index < len(months):
                    t = t.replace(month=months[index], day=1, hour=0, minute=0)
                else:
                    t = datetime.datetime(t.year + 1, months[0], 1)
                continue
            if not self.day_matches(t.date()):
                t = _start_of_next_day(t)
                continue
            if t.hour not in self.hours:
                index = bisect.bisect_right(hours, t.hour)
                if index < len(hours):
                    t = t.replace(hour=hours[index], minute=0)
                else:
                    t = _start_of_next_day(t)
                continue
            if t.minute not in self.minutes:
                index = bisect.bisect_right(minutes, t.minute)
                if index < len(minutes):
                    t = t.replace(minute=minutes[index])
                else:
                    t = t.replace(minute=0) + datetime.timedelta(hours=1)
                continue
            return t
        raise ValueError(f'cron expression {self.expression!r} does not fire '
                         f'within {_SEARCH_YEARS} years of {wall}')


def _start_of_next_day(t: datetime.datetime) -> datetime.datetime:
    return datetime.datetime.combine(t.date() + datetime.timedelta(days=1),
                                     datetime.time())


def _utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.timezone.utc)


def _exists(moment: datetime.datetime) -> bool:
    """Whether an aware wall time exists (is not skipped by a DST change)."""
    round_trip = _utc(moment).astimezone(moment.tzinfo)
    return round_trip.replace(tzinfo=None,
                              fold=0) == moment.replace(tzinfo=None, fold=0)
