"""Calling hours: a weekly window of local wall-clock times in a time zone, minus holidays.

The grammar (SPEC 7.3): ``;``-separated ``DAYS HH:MM-HH:MM`` where ``DAYS`` is a day (``mon`` ..
``sun``), a range (``mon-fri``; a range may wrap round the week, ``fri-mon``) or a comma list of
either (``sat,sun``); start inclusive, end exclusive, ``24:00`` allowed as an end; a day no window
names is closed; ``always`` is every minute of every day and ``never`` none. Windows do not cross
midnight (write ``fri 22:00-24:00; sat 00:00-02:00``). Day names are read case-insensitively and
spaces around ``,`` and ``-`` are ignored, so what an operator types is read as meant.

One definition decides everything: an instant is inside the window when its wall-clock time in
the zone, on its local date, falls in one of that weekday's windows and the date is no holiday.
The daylight-saving changes follow from it without special cases. In the spring gap, a window
whose start does not exist opens at the first existing minute after it (the wall clock jumps
past the start, and the first instant it reads at or after the start is the jump itself). In the
autumn overlap, wall-clock times repeat, and a window over them is open both times round, as a
person looking at the clock would expect.

Errors never repeat the value they reject (it may be pasted from anywhere); they name the window
by its position instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SECONDS = 86_400
_TIME = re.compile(r"(\d{2}):(\d{2})")
_SPACE_AROUND_PUNCTUATION = re.compile(r"\s*([,-])\s*")
MAX_HOURS_LENGTH = 1000


class RulesError(ValueError):
    """A calling-rules value that cannot be used; the message names no input value."""


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """Seconds after local midnight: start inclusive, end exclusive (86,400 is ``24:00``)."""

    start: int
    end: int


Week = tuple[tuple[Window, ...], ...]  # seven days, Monday first


def parse_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise RulesError("the time zone is empty: use an IANA name such as Europe/London")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError("not a known IANA time zone name (such as Europe/London)") from None


def parse_hours(spec: str) -> Week:
    """The seven days' windows, merged and sorted, from the SPEC 7.3 grammar."""
    if not isinstance(spec, str):
        raise RulesError("calling hours must be text")
    text = spec.strip()
    if len(text) > MAX_HOURS_LENGTH:
        raise RulesError(f"calling hours are longer than {MAX_HOURS_LENGTH} characters")
    lowered = text.lower()
    if lowered == "always":
        return tuple((Window(0, DAY_SECONDS),) for _ in DAY_NAMES)
    if lowered == "never":
        return tuple(() for _ in DAY_NAMES)
    days: list[list[Window]] = [[] for _ in DAY_NAMES]
    clauses = 0
    for number, raw in enumerate(text.split(";"), start=1):
        clause = _SPACE_AROUND_PUNCTUATION.sub(r"\1", raw.strip())
        if not clause:
            continue  # a trailing or doubled ';'
        clauses += 1
        parts = clause.split()
        if len(parts) != 2:
            raise RulesError(
                f"window {number} must read DAYS HH:MM-HH:MM (for example mon-fri 08:00-21:00)"
            )
        window = _parse_span(parts[1], number)
        for day in _parse_days(parts[0], number):
            days[day].append(window)
    if not clauses:
        raise RulesError(
            "calling hours are empty: write windows such as 'mon-fri 08:00-21:00',"
            " or 'always' or 'never'"
        )
    return tuple(tuple(_merge(windows)) for windows in days)


def _parse_days(text: str, number: int) -> list[int]:
    days: list[int] = []
    for item in text.lower().split(","):
        first, sep, last = item.partition("-")
        start = _day(first, number)
        if not sep:
            days.append(start)
            continue
        end = _day(last, number)
        span = (end - start) % 7
        days.extend((start + offset) % 7 for offset in range(span + 1))
    return days


def _day(name: str, number: int) -> int:
    try:
        return DAY_NAMES.index(name)
    except ValueError:
        raise RulesError(
            f"window {number}: days are mon, tue, wed, thu, fri, sat and sun,"
            " alone, as a range (mon-fri) or a comma list (sat,sun)"
        ) from None


def _parse_span(text: str, number: int) -> Window:
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise RulesError(f"window {number}: times must read HH:MM-HH:MM")
    start = _seconds(start_text, number, allow_24=False)
    end = _seconds(end_text, number, allow_24=True)
    if end <= start:
        raise RulesError(
            f"window {number}: the end must be after the start (a window cannot cross"
            " midnight: write two, one ending at 24:00 and one starting at 00:00)"
        )
    return Window(start, end)


def _seconds(text: str, number: int, *, allow_24: bool) -> int:
    match = _TIME.fullmatch(text)
    if match is None:
        raise RulesError(f"window {number}: times must be 24-hour HH:MM")
    hours, minutes = int(match[1]), int(match[2])
    if allow_24 and (hours, minutes) == (24, 0):
        return DAY_SECONDS
    if hours > 23 or minutes > 59:
        raise RulesError(f"window {number}: times run from 00:00 to 23:59 (24:00 only as an end)")
    return hours * 3600 + minutes * 60


def _merge(windows: Iterable[Window]) -> Iterator[Window]:
    current: Window | None = None
    for window in sorted(windows):
        if current is not None and window.start <= current.end:
            current = Window(current.start, max(current.end, window.end))
            continue
        if current is not None:
            yield current
        current = window
    if current is not None:
        yield current


def parse_holidays(value: str) -> tuple[date, ...]:
    """CALLING_HOLIDAYS: comma-separated ISO dates (YYYY-MM-DD); empty means none."""
    days = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", item):
            raise RulesError("holidays must be comma-separated ISO dates (YYYY-MM-DD)")
        try:
            days.append(date.fromisoformat(item))
        except ValueError:
            raise RulesError("a holiday is not a real calendar date") from None
    return tuple(sorted(set(days)))


@dataclass(frozen=True, slots=True)
class CallingRules:
    """The rules in force: a time zone, the weekly hours as written, and the holidays."""

    timezone: str
    hours: str
    holidays: tuple[date, ...]
    zone: ZoneInfo = field(compare=False, repr=False)
    week: Week = field(compare=False, repr=False)
    _holiday_set: frozenset[date] = field(compare=False, repr=False)

    @staticmethod
    def parse(timezone: str, hours: str, holidays: Iterable[date] = ()) -> CallingRules:
        """Validated rules (RulesError names what is wrong). Parsed once per distinct value:
        the claim path asks for the rules on every request."""
        return _parse_cached(timezone.strip(), hours.strip(), tuple(sorted(set(holidays))))

    @property
    def never_opens(self) -> bool:
        return not any(self.week)

    def as_dict(self) -> dict[str, object]:
        return {
            "timezone": self.timezone,
            "hours": self.hours,
            "holidays": [d.isoformat() for d in self.holidays],
        }

    # -- decisions --------------------------------------------------------------------------

    def is_open(self, instant: datetime) -> bool:
        """Whether ``instant`` (timezone-aware) is inside the calling window; also the check of a
        ``callback_at``."""
        local = _aware(instant).astimezone(self.zone)
        if local.date() in self._holiday_set:
            return False
        wall = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return any(w.start <= wall < w.end for w in self.week[local.weekday()])

    def next_open(self, instant: datetime) -> datetime | None:
        """The first instant at or after ``instant`` inside the window (``instant`` itself when
        the window is open then), in UTC; None when the rules never open.

        An opening is either a window's start read on the wall clock (once, or twice in the
        autumn overlap) or a daylight-saving change that moves the wall clock into a window (the
        spring gap swallowing a start, the autumn step back into a window). Those instants are
        the candidates, day by day; the first candidate that is inside the window is the answer.
        """
        instant = _aware(instant).astimezone(UTC)
        if self.never_opens:
            return None
        if self.is_open(instant):
            return instant
        first_day = instant.astimezone(self.zone).date()
        # Every weekday with a window comes round within a week; each holiday can push the
        # answer one day further, and a window swallowed by a spring gap one week more.
        for offset in range(15 + len(self.holidays)):
            day = first_day + timedelta(days=offset)
            if day in self._holiday_set or not self.week[day.weekday()]:
                continue
            candidates = [
                moment
                for window in self.week[day.weekday()]
                for moment in wall_clock_instants(self.zone, day, window.start)
            ]
            candidates += _offset_changes_near(self.zone, day)
            opening = min(
                (
                    c
                    for c in candidates
                    if c >= instant and c.astimezone(self.zone).date() == day and self.is_open(c)
                ),
                default=None,
            )
            if opening is not None:
                return opening
        return None

    def next_close(self, instant: datetime) -> datetime | None:
        """The first instant at or after ``instant`` outside the window (``instant`` itself when
        the window is closed then), in UTC; None when the rules never close (every minute of
        the week open and no holiday ahead, as under ``always``).

        A closing is a window's end read on the wall clock, the start of a local day (a
        holiday's, or a day that does not open at midnight after one that ran to 24:00), or a
        daylight-saving change that moves the wall clock out of a window. Those instants are the
        candidates; the first one after ``instant`` that is outside the window is the answer.
        """
        instant = _aware(instant).astimezone(UTC)
        if not self.is_open(instant):
            return instant
        first_day = instant.astimezone(self.zone).date()
        candidates = [
            local_day_start(self.zone, holiday) for holiday in self.holidays if holiday > first_day
        ]
        # Unless every day is open all day (then only a holiday closes), some day closes within
        # a week; a daylight-saving change can move it by a day.
        for offset in range(9):
            day = first_day + timedelta(days=offset)
            candidates.append(local_day_start(self.zone, day))
            candidates += [
                moment
                for window in self.week[day.weekday()]
                for moment in wall_clock_instants(self.zone, day, window.end)
            ]
            candidates += _offset_changes_near(self.zone, day)
        return min((c for c in candidates if c > instant and not self.is_open(c)), default=None)


def wall_clock_instants(zone: ZoneInfo, day: date, seconds: int) -> list[datetime]:
    """The instants (UTC) at which the wall clock in ``zone`` first reads ``seconds`` after
    midnight on ``day``, or later: one normally, two in the autumn overlap, the clock change
    itself when the time falls in the spring gap."""
    if seconds >= DAY_SECONDS:
        return []
    naive = datetime.combine(day, time(seconds // 3600, seconds % 3600 // 60, seconds % 60))
    found = set()
    for fold in (0, 1):
        utc = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if utc.astimezone(zone).replace(tzinfo=None) == naive:
            found.add(utc)
    if found:
        return sorted(found)
    # In the gap: fold=1 reads the time with the offset after the change, fold=0 with the one
    # before; the change lies between those two instants.
    early = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return [_offset_change(zone, early, late)]


def local_day_start(zone: ZoneInfo, day: date) -> datetime:
    """The first instant (UTC) of a local date: its midnight, or the clock change when a zone
    skips midnight."""
    return wall_clock_instants(zone, day, 0)[0]


def _offset_changes_near(zone: ZoneInfo, day: date) -> list[datetime]:
    start = datetime.combine(day, time()).replace(tzinfo=UTC) - timedelta(hours=18)
    end = start + timedelta(hours=60)
    if start.astimezone(zone).utcoffset() == end.astimezone(zone).utcoffset():
        return []
    return [_offset_change(zone, start, end)]


def _offset_change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first whole second in (before, after] carrying ``after``'s UTC offset (zones change
    offsets on whole seconds)."""
    target = after.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = (low + (high - low) / 2).replace(microsecond=0)
        if middle <= low:
            middle = low + timedelta(seconds=1)
        if middle.astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high


@lru_cache(maxsize=64)
def _parse_cached(timezone: str, hours: str, holidays: tuple[date, ...]) -> CallingRules:
    return CallingRules(
        timezone=timezone,
        hours=hours,
        holidays=holidays,
        zone=parse_timezone(timezone),
        week=parse_hours(hours),
        _holiday_set=frozenset(holidays),
    )


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("calling hours judge timezone-aware instants only")
    return instant
