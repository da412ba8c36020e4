"""Retraining triggers: run the pipeline on a cron schedule and/or on new data.

``Scheduler`` calls ``run_pipeline() -> dict`` (one pipeline run, returning its
summary) whenever a trigger fires:

* cron: a ``CronSchedule`` (see ``pipeline.cron``), read on the wall clock of
  ``tz`` (default: the machine's local zone; pass ``'UTC'`` for UTC);
* new data: a ``SpanWatcher`` polls ``data_root`` every ``poll_seconds`` for
  paths matching a pattern such as ``span-{SPAN}``; a span number above the
  last one seen starts a run. The last span seen is kept in
  ``<state_dir>/state.json``, so a restart does not retrain on old data.

Guarantees:

* One run at a time, across processes: a run holds ``flock`` on
  ``<state_dir>/pipeline.lock``. A scheduler that finds it held waits
  (``on_busy='wait'``) or skips that trigger (``on_busy='skip'``), and logs it.
  Manual runs can take the same lock with ``RunLock`` or ``flock(1)``.
* Runs are synchronous, so triggers that come due during a run (cron times
  that pass, spans that appear) are noticed when it ends, logged, and
  coalesced into at most one pending run.
* A failed run is logged (exception type and message) and recorded; the
  scheduler keeps going.
* The next run time is reported at start and after each run.
* SIGINT/SIGTERM: the first stops the scheduler promptly when idle, or after
  the run in progress finishes; a second aborts the run (``SchedulerAborted``).
* Every run is appended to ``<state_dir>/history.jsonl`` (trigger, start, end,
  status, summary or error) and kept in ``Scheduler.history``.

Time comes from an injectable ``Clock`` (pipeline/clock.py; tests pass a fake
one) so tests never wait for wall time. The lock is pipeline/run_lock.py, the
span watcher pipeline/spans.py. To run it under systemd, or plain cron
instead, see docs/scheduling.md.
"""

import dataclasses
import datetime
import functools
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Union

from pipeline.clock import Clock
from pipeline.clock import SystemClock
from pipeline.clock import resolve_timezone
from pipeline.cron import CronSchedule
from pipeline.run_lock import RunLock
from pipeline.run_lock import lock_path
from pipeline.spans import SpanWatcher

STATE_FILENAME = 'state.json'
HISTORY_FILENAME = 'history.jsonl'

_LOG = logging.getLogger(__name__)

# Counting the cron times that passed during one long run stops here; the
# count only feeds a log line (they all coalesce into one run anyway).
_MAX_COUNTED_TICKS = 1000


class SchedulerAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM aborted the scheduler (and any run under way)."""


@dataclasses.dataclass
class Trigger:
    """Why a run starts: a cron time that came due, or a new span."""

    kind: str
    due: datetime.datetime
    span: Optional[int] = None
    ticks: int = 1

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form for the history."""
        record: Dict[str, Any] = {
            'kind': self.kind,
            'due': self.due.isoformat()
        }
        if self.span is not None:
            record['span'] = self.span
        if self.ticks > 1:
            record['ticks'] = self.ticks
        return record

    def __str__(self) -> str:
        if self.kind == 'new-data':
            return f'new-data (span {self.span})'
        extra = f', {self.ticks} ticks' if self.ticks > 1 else ''
        return f'cron ({self.due.isoformat()}{extra})'


def read_history(state_dir: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """Returns every run recorded under ``state_dir``, oldest first."""
    path = os.path.join(os.fspath(state_dir), HISTORY_FILENAME)
    if not os.path.exists(path):
        return []
    with open(path) as history_file:
        return [json.loads(line) for line in history_file if line.strip()]


class Scheduler:
    """Runs the pipeline on cron and/or new-data triggers, one run at a time.

    Args:
        run_pipeline: Runs the pipeline once and returns its summary; may raise.
        state_dir: Holds the lock file, span state and run history.
        cron: A ``CronSchedule`` or its expression, or None.
        watcher: A ``SpanWatcher`` (or anything with ``key``,
            ``poll_seconds``, ``latest_span()`` and ``describe()``), or None.
        clock: Time source; ``SystemClock()`` by default.
        tz: Zone the cron fields are read in: a tzinfo, a zone name,
            ``'UTC'``, or None/``'local'`` for the machine's zone.
        max_runs: Stop after this many runs (succeeded or failed).
        on_busy: ``'wait'`` for, or ``'skip'`` a trigger when another process
            holds the pipeline lock.
        lock_poll_seconds: How often to retry the lock while waiting.
        run_on_existing_data: On the very first start (no state yet), whether
            spans already present trigger a run (True) or are only recorded
            as seen (False).
        echo: Also receives each log line (default: print to stdout); None to
            rely on logging alone.
        logger: Logger for the same lines.

    Attributes:
        history: Records of the runs this scheduler started or skipped.
    """

    def __init__(self,
                 run_pipeline: Callable[[], Dict[str, Any]],
                 state_dir: Union[str, os.PathLike],
                 *,
                 cron: Union[CronSchedule, str, None] = None,
                 watcher: Optional[SpanWatcher] = None,
                 clock: Optional[Clock] = None,
                 tz: Union[datetime.tzinfo, str, None] = None,
                 max_runs: Optional[int] = None,
                 on_busy: str = 'wait',
                 lock_poll_seconds: float = 5.0,
                 run_on_existing_data: bool = True,
                 echo: Optional[Callable[[str],
                                         None]] = functools.partial(print,
                                                                    flush=True),
                 logger: Optional[logging.Logger] = None):
        if cron is None and watcher is None:
            raise ValueError('the scheduler needs a cron schedule, a data '
                             'watcher, or both')
        if on_busy not in ('wait', 'skip'):
            raise ValueError("on_busy must be 'wait' or 'skip', got "
                             f"{on_busy!r}")
        if max_runs is not None and max_runs < 1:
            raise ValueError(f'max_runs must be at least 1, got {max_runs}')
        self._run_pipeline = run_pipeline
        self.state_dir = os.fspath(state_dir)
        self._cron = CronSchedule.parse(cron) if isinstance(cron, str) else cron
        self._watcher = watcher
        self._clock = clock or SystemClock()
        self._tz = resolve_timezone(tz)
        self._max_runs = max_runs
        self._on_busy = on_busy
        self._lock_poll_seconds = lock_poll_seconds
        self._run_on_existing_data = run_on_existing_data
        self._echo = echo
        self._log = logger or _LOG
        self._lock = RunLock(lock_path(self.state_dir))
        self.history: List[Dict[str, Any]] = []
        self._runs = 0
        self._stop_reason: Optional[str] = None
        self._signals = 0
        self._current_run: Optional[int] = None
        self._last_run_end: Optional[datetime.datetime] = None

    # Public control ------------------------------------------------------

    def run(self,
            until: Optional[datetime.datetime] = None,
            install_signal_handlers: bool = True) -> List[Dict[str, Any]]:
        """Runs triggers until stopped, ``max_runs`` is reached, or ``until``.

        A Scheduler runs once; build a new one to start again.

        Args:
            until: Stop once the clock reaches this time (for tests and
                bounded sessions); triggers due at ``until`` do not run.
            install_signal_handlers: Handle SIGINT/SIGTERM (only possible, and
                only done, in the main thread).

        Returns:
            The history records of this session.

        Raises:
            SchedulerAborted: After a second SIGINT/SIGTERM.
        """
        os.makedirs(self.state_dir, exist_ok=True)
        previous = {}
        if install_signal_handlers and (threading.current_thread()
                                        is threading.main_thread()):
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self._loop(until)
        except SchedulerAborted as error:
            self._say(f'scheduler aborted ({error}) after {self._runs} run(s)',
                      logging.WARNING)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.history

    def stop(self, reason: str = 'stop requested') -> None:
        """Asks the scheduler to stop after the current wait or run."""
        if self._stop_reason is None:
            self._stop_reason = reason
        interrupt = getattr(self._clock, 'interrupt', None)
        if interrupt is not None:
            interrupt()

    # Main loop -----------------------------------------------------------

    def _now(self) -> datetime.datetime:
        now = self._clock.now()
        if now.tzinfo is None:
            raise ValueError('Clock.now() must return a timezone-aware '
                             'datetime')
        return now.astimezone(self._tz)

    def _loop(self, until: Optional[datetime.datetime]) -> None:
        now = self._now()
        self._say(f'scheduler started ({self._describe_triggers()}); state in '
                  f'{self.state_dir}')
        next_cron = self._cron.next_after(now) if self._cron else None
        next_poll = now if self._watcher else None
        self._announce_next(next_cron)
        announce = False
        pending: List[Trigger] = []
        while self._stop_reason is None:
            if self._max_runs is not None and self._runs >= self._max_runs:
                self._stop_reason = f'max_runs={self._max_runs} reached'
                break
            now = self._now()
            if until is not None and now >= until:
                self._stop_reason = f'reached {until.isoformat()}'
                break
            if next_cron is not None and now >= next_cron:
                trigger = Trigger('cron', next_cron)
                next_cron = self._count_ticks(trigger, now)
                self._queue(pending, trigger, due=trigger.due)
            if next_poll is not None and now >= next_poll:
                span = self._check_new_span()
                if span is not None:
                    self._queue(pending,
                                Trigger('new-data', now, span=span),
                                due=next_poll)
                next_poll = now + datetime.timedelta(
                    seconds=self._watcher.poll_seconds)
            if pending:
                self._execute(pending)
                pending = []
                announce = True
                continue
            if announce:
                # Only once idle: triggers that came due during the run have
                # been handled by now, so the announced time is the real one.
                self._announce_next(next_cron)
                announce = False
            wake = min(
                t for t in (next_cron, next_poll, until) if t is not None)
            self._clock.sleep(max(0.0, (wake - now).total_seconds()))
        self._say(f'scheduler stopped ({self._stop_reason}) after '
                  f'{self._runs} run(s)')

    def _count_ticks(self, trigger: Trigger,
                     now: datetime.datetime) -> datetime.datetime:
        """Adds cron times due by ``now`` to ``trigger``; returns the next."""
        following = self._cron.next_after(trigger.due)
        while following <= now and trigger.ticks < _MAX_COUNTED_TICKS:
            trigger.ticks += 1
            following = self._cron.next_after(following)
        return self._cron.next_after(now)

    def _queue(self, pending: List[Trigger], trigger: Trigger,
               due: datetime.datetime) -> None:
        """Adds a trigger; ``due`` is when it fired or when its poll was due."""
        if self._last_run_end is not None and due <= self._last_run_end:
            self._say(f'trigger {trigger} came due during run #{self._runs}; '
                      'queued (at most one pending run)')
        pending.append(trigger)

    def _check_new_span(self) -> Optional[int]:
        try:
            latest = self._watcher.latest_span()
        except OSError as error:
            self._say(
                f'cannot check {self._watcher.describe()} for new spans: '
                f'{type(error).__name__}: {error}', logging.WARNING)
            return None
        if latest is None:
            return None
        spans = self._load_state().setdefault('spans', {})
        last = spans.get(self._watcher.key)
        if last is None and not self._run_on_existing_data:
            self._mark_span_seen(latest)
            self._say(f'first start: span {latest} already present, recorded '
                      'as seen; waiting for a newer one')
            return None
        if last is None or latest > last:
            return latest
        return None

    # Runs ----------------------------------------------------------------

    def _execute(self, triggers: List[Trigger]) -> None:
        if len(triggers) > 1:
            self._say(f'coalesced {len(triggers)} triggers into one run: ' +
                      ', '.join(str(t) for t in triggers))
        if not self._lock.acquire():
            holder = self._lock.holder()
            if self._on_busy == 'skip':
                self._say(
                    f'pipeline lock {self._lock.path} is held by '
                    f'{holder}; skipping this run', logging.WARNING)
                now = self._now()
                self._record(triggers,
                             None,
                             now,
                             now,
                             'skipped',
                             error=f'lock held by {holder}')
                return
            self._say(f'pipeline lock {self._lock.path} is held by {holder}; '
                      'waiting for it')
            waited_from = self._now()
            while not self._lock.acquire():
                if self._stop_reason is not None:
                    self._say('stopping while waiting for the pipeline lock; '
                              'run not started')
                    return
                self._clock.sleep(self._lock_poll_seconds)
            waited = (self._now() - waited_from).total_seconds()
            self._say(f'pipeline lock acquired after waiting {waited:.0f}s')
        try:
            self._run_locked(triggers)
        finally:
            self._lock.release()

    def _run_locked(self, triggers: List[Trigger]) -> None:
        spans = [t.span for t in triggers if t.span is not None]
        if spans:
            # Marked when the run starts, so a span whose run fails does not
            # retrigger every poll; the next cron time or span retries.
            self._mark_span_seen(max(spans))
        self._runs += 1
        number = self._runs
        self._current_run = number
        start = self._now()
        self._say(f'run #{number} started (trigger: ' +
                  ', '.join(str(t) for t in triggers) + ')')
        try:
            summary = self._run_pipeline()
        except (Exception, SystemExit) as error:
            end = self._now()
            reason = f'{type(error).__name__}: {error}'
            self._say(
                f'run #{number} failed after '
                f'{(end - start).total_seconds():.0f}s: {reason}',
                logging.ERROR)
            self._log.debug('run #%d traceback', number, exc_info=True)
            self._record(triggers, number, start, end, 'failed', error=reason)
        except BaseException as error:
            end = self._now()
            self._record(triggers,
                         number,
                         start,
                         end,
                         'aborted',
                         error=f'{type(error).__name__}: {error}')
            raise
        else:
            end = self._now()
            self._say(f'run #{number} succeeded in '
                      f'{(end - start).total_seconds():.0f}s')
            self._record(triggers,
                         number,
                         start,
                         end,
                         'succeeded',
                         summary=summary)
        finally:
            self._current_run = None
            self._last_run_end = self._now()

    def _record(self,
                triggers: List[Trigger],
                number: Optional[int],
                start: datetime.datetime,
                end: datetime.datetime,
                status: str,
                summary: Optional[Dict[str, Any]] = None,
                error: Optional[str] = None) -> None:
        record = {
            'run': number,
            'trigger': [t.to_dict() for t in triggers],
            'start': start.isoformat(),
            'end': end.isoformat(),
            'duration_seconds': round((end - start).total_seconds(), 3),
            'status': status,
            'summary': summary,
            'error': error,
        }
        self.history.append(record)
        path = os.path.join(self.state_dir, HISTORY_FILENAME)
        with open(path, 'a') as history_file:
            history_file.write(json.dumps(record, default=str) + '\n')

    # State ---------------------------------------------------------------

    def _load_state(self) -> Dict[str, Any]:
        path = os.path.join(self.state_dir, STATE_FILENAME)
        try:
            with open(path) as state_file:
                return json.load(state_file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            self._say(f'ignoring unreadable state file {path}: {error}',
                      logging.WARNING)
            return {}

    def _mark_span_seen(self, span: int) -> None:
        state = self._load_state()
        state.setdefault('spans', {})[self._watcher.key] = span
        path = os.path.join(self.state_dir, STATE_FILENAME)
        temporary = f'{path}.tmp.{os.getpid()}'
        with open(temporary, 'w') as state_file:
            json.dump(state, state_file, indent=2)
        os.replace(temporary, path)

    # Messages and signals --------------------------------------------------

    def _describe_triggers(self) -> str:
        parts = []
        if self._cron:
            parts.append(f'cron {self._cron.expression!r} in {self._tz}')
        if self._watcher:
            parts.append(f'new spans of {self._watcher.describe()} every '
                         f'{self._watcher.poll_seconds:g}s')
        return ' and '.join(parts)

    def _announce_next(self, next_cron: Optional[datetime.datetime]) -> None:
        parts = []
        if next_cron is not None:
            parts.append(f'next run at {next_cron.isoformat()}')
        if self._watcher is not None:
            last = self._load_state().get('spans', {}).get(self._watcher.key)
            seen = f'newer than span {last} ' if last is not None else ''
            parts.append(('or earlier ' if parts else 'next run ') +
                         f'when a span {seen}appears in '
                         f'{self._watcher.describe()}')
        self._say('; '.join(parts))

    def _say(self, message: str, level: int = logging.INFO) -> None:
        self._log.log(level, message)
        if self._echo is not None:
            self._echo(message)

    def _on_signal(self, signum: int, frame: Any) -> None:
        del frame
        name = signal.Signals(signum).name
        self._signals += 1
        if self._signals > 1:
            raise SchedulerAborted(f'second signal {name}')
        self.stop(f'received {name}')
        if self._current_run is not None:
            # Logging or print() here could re-enter a stream the interrupted
            # code is writing to; os.write cannot.
            os.write(sys.stderr.fileno(), (
                f'received {name}: run #{self._current_run} will finish first; '
                'send the signal again to abort it\n').encode())
