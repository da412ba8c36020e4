"""Tests for pipeline.cron: parsing, errors, and next firing times."""

import datetime
import zoneinfo

import pytest

from pipeline.cron import CronSchedule

UTC = datetime.timezone.utc


def at(*args, tz=UTC):
    return datetime.datetime(*args, tzinfo=tz)


def zone(name):
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip(f'no time zone data for {name}')


def firings(expression, start, count):
    schedule = CronSchedule.parse(expression)
    times = []
    moment = start
    for _ in range(count):
        moment = schedule.next_after(moment)
        times.append(moment)
    return times


# Parsing -------------------------------------------------------------------


def test_wildcards_cover_each_field():
    schedule = CronSchedule.parse('* * * * *')
    assert schedule.minutes == frozenset(range(60))
    assert schedule.hours == frozenset(range(24))
    assert schedule.days == frozenset(range(1, 32))
    assert schedule.months == frozenset(range(1, 13))
    assert schedule.weekdays == frozenset(range(7))
    assert not schedule.days_restricted and not schedule.weekdays_restricted


@pytest.mark.parametrize('field, expected', [
    ('5', {5}),
    ('1,2,30', {1, 2, 30}),
    ('10-13', {10, 11, 12, 13}),
    ('*/20', {0, 20, 40}),
    ('10-30/10', {10, 20, 30}),
    ('50/5', {50, 55}),
    ('1-3,7,*/30', {0, 1, 2, 3, 7, 30}),
])
def test_minute_field_syntax(field, expected):
    assert CronSchedule.parse(f'{field} * * * *').minutes == expected


def test_month_and_weekday_names_are_case_insensitive():
    schedule = CronSchedule.parse('0 0 * JAN,mar-May Mon-fri')
    assert schedule.months == {1, 3, 4, 5}
    assert schedule.weekdays == {1, 2, 3, 4, 5}


def test_sunday_is_zero_and_seven():
    assert CronSchedule.parse('0 0 * * 7').weekdays == {0}
    assert CronSchedule.parse('0 0 * * 0').weekdays == {0}
    assert CronSchedule.parse('0 0 * * 5-7').weekdays == {0, 5, 6}
    assert CronSchedule.parse('0 0 * * sun').weekdays == {0}


@pytest.mark.parametrize('macro, fields', [
    ('@hourly', '0 * * * *'),
    ('@daily', '0 0 * * *'),
    ('@midnight', '0 0 * * *'),
    ('@weekly', '0 0 * * 0'),
    ('@monthly', '0 0 1 * *'),
    ('@yearly', '0 0 1 1 *'),
    ('@annually', '0 0 1 1 *'),
    ('@DAILY', '0 0 * * *'),
])
def test_macros(macro, fields):
    schedule = CronSchedule.parse(macro)
    expanded = CronSchedule.parse(fields)
    assert schedule.expression == macro
    assert schedule.to_fields() == expanded.to_fields() == fields


@pytest.mark.parametrize('days, weekdays, restricted', [
    ('*', '*', (False, False)),
    ('*/1', '*', (False, False)),
    ('*/2', '*', (True, False)),
    ('1-31', '*', (True, False)),
    ('*', 'mon', (False, True)),
    ('15', '0-6', (True, True)),
])
def test_day_restriction_flags(days, weekdays, restricted):
    schedule = CronSchedule.parse(f'0 0 {days} * {weekdays}')
    assert (schedule.days_restricted,
            schedule.weekdays_restricted) == restricted


@pytest.mark.parametrize(
    'expression, message',
    [
        ('', 'has 0 fields'),
        ('* * * *', 'has 4 fields'),
        ('* * * * * *', 'has 6 fields'),
        ('@reboot', 'unknown cron macro'),
        ('60 * * * *', 'minute field .*60 is outside 0-59'),
        ('* 24 * * *', 'hour field .*outside 0-23'),
        ('* * 0 * *', 'day-of-month field .*outside 1-31'),
        ('* * 32 * *', 'day-of-month field'),
        ('* * * 13 *', 'month field .*outside 1-12'),
        ('* * * 0 *', 'month field'),
        ('* * * * 8', 'day-of-week field .*outside 0-7'),
        ('* * * foo *', "month field .*'foo' is not a number or a name"),
        ('* * * * mon-funday', 'day-of-week field'),
        ('* * * jan *x', 'day-of-week field'),
        ('x * * * *', "minute field .*'x' is not a number"),
        ('jan * * * *', 'minute field'),  # names only where the field has them
        ('5-1 * * * *', 'minute field .*runs backwards'),
        ('*/0 * * * *', 'minute field .*step'),
        ('*/x * * * *', 'minute field .*step'),
        ('1-5/ * * * *', 'minute field .*step'),
        ('1,,2 * * * *', 'minute field .*empty list item'),
        ('1, * * * *', 'minute field .*empty list item'),
        ('-1 * * * *', 'minute field'),
        ('1-2-3 * * * *', 'minute field'),
        ('0 0 30 2 *', 'day-of-month field .*no such day'),
        ('0 0 31 4,6,9,11 *', 'day-of-month field .*no such day'),
    ])
def test_parse_errors_name_the_field(expression, message):
    with pytest.raises(ValueError, match=message):
        CronSchedule.parse(expression)


def test_impossible_date_is_fine_when_weekday_also_restricted():
    # Day 30 never occurs in February, but Mondays do (OR rule).
    schedule = CronSchedule.parse('0 0 30 2 mon')
    assert schedule.next_after(at(2024, 1, 1)) == at(2024, 2, 5)


# Next firing time ----------------------------------------------------------


def test_next_after_is_strictly_after_and_on_whole_minutes():
    schedule = CronSchedule.parse('* * * * *')
    assert schedule.next_after(at(2024, 1, 1, 10, 0)) == at(2024, 1, 1, 10, 1)
    assert schedule.next_after(at(2024, 1, 1, 10, 0, 59,
                                  999)) == at(2024, 1, 1, 10, 1)


def test_every_fifteen_minutes_in_office_hours():
    assert firings('*/15 9-17 * * mon-fri', at(2024, 1, 5, 17, 40), 4) == [
        at(2024, 1, 5, 17, 45),
        at(2024, 1, 8, 9, 0),
        at(2024, 1, 8, 9, 15),
        at(2024, 1, 8, 9, 30)
    ]


def test_month_and_year_rollover():
    assert firings('0 0 1 * *', at(2023, 11, 15),
                   3) == [at(2023, 12, 1),
                          at(2024, 1, 1),
                          at(2024, 2, 1)]
    assert firings('59 23 31 * *', at(2024, 1, 31, 23, 59), 3) == [
        at(2024, 3, 31, 23, 59),
        at(2024, 5, 31, 23, 59),
        at(2024, 7, 31, 23, 59)
    ]
    assert CronSchedule.parse('@yearly').next_after(at(2024, 12, 31, 23,
                                                       59)) == at(2025, 1, 1)


def test_leap_day():
    assert firings('0 12 29 2 *', at(2023, 3, 1), 3) == [
        at(2024, 2, 29, 12),
        at(2028, 2, 29, 12),
        at(2032, 2, 29, 12)
    ]
    # 2100 is not a leap year: 2096 is followed by 2104.
    assert CronSchedule.parse('0 0 29 feb *').next_after(at(2096, 3, 1)) == at(
        2104, 2, 29)


def test_day_of_month_or_day_of_week_when_both_restricted():
    # The 13th, or any Friday.
    assert firings('0 0 13 * fri', at(2024, 9, 1), 4) == [
        at(2024, 9, 6),
        at(2024, 9, 13),
        at(2024, 9, 20),
        at(2024, 9, 27)
    ]


def test_only_restricted_day_field_counts():
    assert firings('0 0 13 * *', at(2024, 9, 1),
                   2) == [at(2024, 9, 13), at(2024, 10, 13)]
    assert firings('0 0 * * fri', at(2024, 9, 1),
                   2) == [at(2024, 9, 6), at(2024, 9, 13)]
    # */2 restricts day of month, so with Sunday it is odd days OR Sundays.
    assert firings('0 0 */2 * 0', at(2024, 9, 1), 4) == [
        at(2024, 9, 3),
        at(2024, 9, 5),
        at(2024, 9, 7),
        at(2024, 9, 8)
    ]


def test_weekly_and_sunday_as_seven():
    sunday = at(2024, 9, 8)
    assert CronSchedule.parse('@weekly').next_after(at(2024, 9, 2)) == sunday
    assert CronSchedule.parse('0 0 * * 7').next_after(at(2024, 9, 2)) == sunday


def test_hourly_at_day_end():
    assert CronSchedule.parse('@hourly').next_after(at(2024, 12, 31, 23,
                                                       0)) == at(
                                                           2025, 1, 1, 0, 0)


_NAMES = {
    **{
        name: n for n, name in enumerate(
            'jan feb mar apr may jun jul aug sep oct nov dec'.split(), 1)
    },
    **{
        name: n for n, name in enumerate('sun mon tue wed thu fri sat'.split())
    }
}


def _field_values(field, low, high):
    """A cron field's values, read here by hand (not by pipeline.cron)."""
    values = set()
    for part in field.split(','):
        part, _, step = part.partition('/')
        if part == '*':
            first, last = low, high
        else:
            first, _, last = part.partition('-')
            first = _NAMES.get(first, None) or int(first)
            last = (_NAMES.get(last, None) or
                    int(last)) if last else (high if step else first)
        values.update(range(first, last + 1, int(step or 1)))
    return values


def _brute_matches(expression, moment):
    """Whether a five-field cron `expression` fires at `moment` (a day
    matches its day of the month or of the week when both are given)."""
    minute, hour, day, month, weekday = expression.split()
    weekdays = {w % 7 for w in _field_values(weekday, 0, 7)}
    on_day = moment.day in _field_values(day, 1, 31)
    on_weekday = (moment.weekday() + 1) % 7 in weekdays
    if day != '*' and weekday != '*':
        day_ok = on_day or on_weekday
    else:
        day_ok = on_day and on_weekday
    return (moment.minute in _field_values(minute, 0, 59) and
            moment.hour in _field_values(hour, 0, 23) and
            moment.month in _field_values(month, 1, 12) and day_ok)


def test_next_after_matches_brute_force():
    """Minute by minute from the start, with a matcher of the test's own."""
    start = at(2024, 2, 26, 22, 0)
    for expression in ('7,37 */5 * * *', '0 0-6/3 1,29 * 2',
                       '30 23 * feb,mar *', '*/10 1 28-31 * *'):
        schedule = CronSchedule.parse(expression)
        expected = start + datetime.timedelta(minutes=1)
        while not _brute_matches(expression, expected):
            expected += datetime.timedelta(minutes=1)
        assert schedule.next_after(start) == expected, expression


def test_next_after_skips_by_field_not_by_minute(monkeypatch):
    # Every step of the search checks the day fields once it is in an
    # allowed month: count those checks, and stop a minute-by-minute (or
    # hour-by-hour) search at the first step a day-by-day one never takes.
    checks = []
    day_matches = CronSchedule.day_matches

    def counted(self, date):
        checks.append(date)
        assert len(checks) <= 9 * 29, 'searched more often than once a day'
        return day_matches(self, date)

    monkeypatch.setattr(CronSchedule, 'day_matches', counted)
    # Feb 29 or a Monday in Feb: Monday 2025-02-03.
    assert CronSchedule.parse('0 0 29 2 1').next_after(at(2024, 3,
                                                          1)) == at(2025, 2, 3)
    checks.clear()
    # Feb 29 only: 2100 is no leap year, so eight Februaries are searched.
    assert CronSchedule.parse('0 0 29 2 *').next_after(at(2096, 3, 1)) == at(
        2104, 2, 29)


def test_keeps_time_zone_and_uses_its_wall_clock():
    paris = zone('Europe/Paris')
    moment = at(2024, 6, 1, 0, 30, tz=UTC)  # 02:30 in Paris
    result = CronSchedule.parse('0 3 * * *').next_after(
        moment.astimezone(paris))
    assert result == at(2024, 6, 1, 3, 0, tz=paris)
    assert result.tzinfo is paris
    assert result.astimezone(UTC) == at(2024, 6, 1, 1, 0)


def test_naive_datetime_is_rejected():
    with pytest.raises(ValueError, match='timezone-aware'):
        CronSchedule.parse('* * * * *').next_after(datetime.datetime(
            2024, 1, 1))


def test_daylight_saving_gap_is_skipped_and_repeat_fires_once():
    new_york = zone('America/New_York')
    schedule = CronSchedule.parse('30 2 * * *')
    # 02:30 does not exist on 2024-03-10.
    assert schedule.next_after(at(2024, 3, 9, 12,
                                  tz=new_york)) == at(2024,
                                                      3,
                                                      11,
                                                      2,
                                                      30,
                                                      tz=new_york)
    once = CronSchedule.parse('30 1 * * *')
    first = once.next_after(at(2024, 11, 3, 0, 0, tz=new_york))
    assert first.utcoffset() == datetime.timedelta(hours=-4)
    # From inside the repeated hour (second pass), the next is the next day.
    second_pass = datetime.datetime(2024, 11, 3, 1, 10, fold=1, tzinfo=new_york)
    assert once.next_after(second_pass) == at(2024, 11, 4, 1, 30, tz=new_york)


def test_to_fields_round_trips():
    for expression in ('*/15 9-17 * * mon-fri', '0 0 13 * fri', '5 4 * * 7',
                       '0 0 */2 * *', '1,2,5-9 * * jan,dec *'):
        schedule = CronSchedule.parse(expression)
        again = CronSchedule.parse(schedule.to_fields())
        assert dataclass_fields(again) == dataclass_fields(schedule), expression


def dataclass_fields(schedule):
    return (schedule.minutes, schedule.hours, schedule.days, schedule.months,
            schedule.weekdays, schedule.days_restricted,
            schedule.weekdays_restricted)
