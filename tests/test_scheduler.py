"""Tests for pipeline.scheduler: cron and new-data triggers, lock, signals.

Most tests drive the scheduler with a FakeClock, so simulated hours pass
instantly. The lock and signal tests use real processes.
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zoneinfo

import numpy as np
import pytest

from pipeline.run_lock import RunLock
from pipeline.run_lock import lock_path
from pipeline.scheduler import Scheduler
from pipeline.scheduler import read_history
from pipeline.spans import SpanWatcher
from tests import datasets
from tests.fakes import FakeClock

UTC = datetime.timezone.utc
START = datetime.datetime(2024, 1, 1, 1, 30, tzinfo=UTC)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def at(hour, minute=0, day=1):
    return datetime.datetime(2024, 1, day, hour, minute, tzinfo=UTC)


def zone(name):
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip(f'no time zone data for {name}')


def minutes(n):
    return datetime.timedelta(minutes=n)


class Recorder:
    """A run_pipeline stand-in that records when it ran."""

    def __init__(self, clock, fail_on=(), during=None):
        self.clock = clock
        self.times = []
        self.fail_on = set(fail_on)
        self.during = during or {}

    def __call__(self):
        self.times.append(self.clock.now())
        number = len(self.times)
        if number in self.during:
            self.during[number]()
        if number in self.fail_on:
            raise RuntimeError(f'boom in run {number}')
        return {'run': number, 'accuracy': 0.9}


def make(tmp_path, clock=None, **kwargs):
    clock = clock or FakeClock(START)
    lines = []
    recorder = Recorder(clock, kwargs.pop('fail_on', ()),
                        kwargs.pop('during', None))
    scheduler = Scheduler(recorder,
                          tmp_path / 'state',
                          clock=clock,
                          tz='UTC',
                          echo=lines.append,
                          **kwargs)
    return scheduler, recorder, lines


def next_run_lines(lines):
    return [line for line in lines if line.startswith('next run at')]


# Cron ------------------------------------------------------------------------


def test_cron_runs_at_scheduled_times_and_announces_next(tmp_path):
    clock = FakeClock(START)
    scheduler, recorder, lines = make(tmp_path, clock=clock, cron='0 */6 * * *')

    history = scheduler.run(until=at(1, 0, day=2))

    assert recorder.times == [at(6), at(12), at(18), at(0, day=2)]
    assert next_run_lines(lines) == [
        'next run at 2024-01-01T06:00:00+00:00',
        'next run at 2024-01-01T12:00:00+00:00',
        'next run at 2024-01-01T18:00:00+00:00',
        'next run at 2024-01-02T00:00:00+00:00',
        'next run at 2024-01-02T06:00:00+00:00',
    ]
    assert [r['status'] for r in history] == ['succeeded'] * 4
    assert history[0]['trigger'] == [{
        'kind': 'cron',
        'due': '2024-01-01T06:00:00+00:00'
    }]
    assert history[0]['summary'] == {'run': 1, 'accuracy': 0.9}
    assert read_history(tmp_path / 'state') == history
    # It slept until each firing time instead of polling.
    assert len(clock.sleeps) == 5


def test_cron_in_another_time_zone(tmp_path):
    clock = FakeClock(START)
    lines = []
    times = []
    scheduler = Scheduler(lambda: times.append(clock.now()) or {},
                          tmp_path / 'state',
                          cron='0 3 * * *',
                          clock=clock,
                          tz=zone('Europe/Paris'),
                          echo=lines.append)
    scheduler.run(until=at(12))
    assert times == [at(2)]  # 03:00 in Paris is 02:00 UTC in winter
    assert next_run_lines(lines)[0] == 'next run at 2024-01-01T03:00:00+01:00'


def test_max_runs(tmp_path):
    scheduler, recorder, lines = make(tmp_path, cron='* * * * *', max_runs=3)
    scheduler.run()
    assert recorder.times == [at(1, 31), at(1, 32), at(1, 33)]
    assert lines[-1] == 'scheduler stopped (max_runs=3 reached) after 3 run(s)'


def test_failed_run_is_recorded_and_scheduler_keeps_going(tmp_path, caplog):
    scheduler, recorder, lines = make(tmp_path,
                                      cron='0 * * * *',
                                      fail_on={1},
                                      max_runs=2)
    with caplog.at_level('ERROR', logger='pipeline.scheduler'):
        history = scheduler.run()

    assert recorder.times == [at(2), at(3)]
    assert [r['status'] for r in history] == ['failed', 'succeeded']
    assert history[0]['error'] == 'RuntimeError: boom in run 1'
    assert history[0]['summary'] is None
    assert 'run #1 failed after 0s: RuntimeError: boom in run 1' in lines
    assert 'RuntimeError: boom in run 1' in caplog.text
    assert lines[lines.index('run #1 failed after 0s: RuntimeError: boom in '
                             'run 1') +
                 1] == 'next run at 2024-01-01T03:00:00+00:00'


def test_needs_a_trigger_and_valid_options(tmp_path):
    with pytest.raises(ValueError, match='cron schedule, a data watcher'):
        Scheduler(dict, tmp_path)
    with pytest.raises(ValueError, match='on_busy'):
        Scheduler(dict, tmp_path, cron='@daily', on_busy='maybe')
    with pytest.raises(ValueError, match='hour field'):
        Scheduler(dict, tmp_path, cron='0 25 * * *')
    with pytest.raises(ValueError, match='unknown time zone'):
        Scheduler(dict, tmp_path, cron='@daily', tz='Mars/Olympus_Mons')


# New data --------------------------------------------------------------------


def test_span_watcher_finds_spans(tmp_path):
    for name in ('span-1', 'span-12', 'span-x', 'span-3.tmp', 'other-99',
                 '.span-50'):
        (tmp_path / name).mkdir()
    (tmp_path / 'span-7').write_text('a file counts too')
    watcher = SpanWatcher(tmp_path, 'span-{SPAN}')
    assert watcher.spans() == [1, 7, 12]
    assert watcher.latest_span() == 12

    nested = SpanWatcher(tmp_path, 'span-{SPAN}/_SUCCESS')
    assert nested.latest_span() is None
    (tmp_path / 'span-1' / '_SUCCESS').touch()
    assert nested.latest_span() == 1

    fixed = SpanWatcher(tmp_path, 'span-{SPAN:2}')
    assert fixed.spans() == [12]
    assert SpanWatcher(tmp_path / 'missing').latest_span() is None


@pytest.mark.parametrize('pattern', ['span', 'span-{SPAN}-{SPAN}', '{VERSION}'])
def test_span_watcher_pattern_needs_one_span_token(tmp_path, pattern):
    with pytest.raises(ValueError, match='exactly one'):
        SpanWatcher(tmp_path, pattern)


def test_new_span_triggers_run_once_and_state_survives_restart(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    (data / 'not-a-span').mkdir()
    clock = FakeClock(START)
    clock.call_at(START + minutes(5), lambda: (data / 'span-1').mkdir())
    clock.call_at(
        START + minutes(10), lambda: [(data / 'span-3').mkdir(),
                                      (data / 'span-2').mkdir()])
    watcher = SpanWatcher(data, 'span-{SPAN}', poll_seconds=60)
    scheduler, recorder, lines = make(tmp_path, clock=clock, watcher=watcher)

    history = scheduler.run(until=START + minutes(60))

    assert recorder.times == [START + minutes(5), START + minutes(10)]
    assert [r['trigger'][0]['span'] for r in history] == [1, 3]
    assert history[0]['trigger'][0]['kind'] == 'new-data'
    state = json.loads((tmp_path / 'state' / 'state.json').read_text())
    assert state['spans'][watcher.key] == 3
    assert lines[-2].startswith('next run when a span newer than span 3 '
                                'appears')

    # A new scheduler process on the same state dir: span 3 is old news.
    clock = FakeClock(START + minutes(120))
    clock.call_at(START + minutes(150), lambda: (data / 'span-4').mkdir())
    restarted, recorder, _ = make(tmp_path, clock=clock, watcher=watcher)
    restarted.run(until=START + minutes(180))
    assert recorder.times == [START + minutes(150)]
    assert len(read_history(tmp_path / 'state')) == 3


def test_existing_spans_at_first_start(tmp_path):
    data = tmp_path / 'data'
    (data / 'span-5').mkdir(parents=True)
    watcher = SpanWatcher(data, poll_seconds=60)
    scheduler, recorder, _ = make(tmp_path / 'a', watcher=watcher)
    scheduler.run(until=START + minutes(10))
    assert recorder.times == [START]

    baseline, recorder, lines = make(tmp_path / 'b',
                                     watcher=watcher,
                                     run_on_existing_data=False)
    baseline.run(until=START + minutes(10))
    assert recorder.times == []
    assert any(
        'span 5 already present, recorded as seen' in line for line in lines)


def test_cron_and_new_data_together(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    clock = FakeClock(START)
    clock.call_at(at(2, 40), lambda: (data / 'span-1').mkdir())
    scheduler, recorder, lines = make(tmp_path,
                                      clock=clock,
                                      cron='0 */2 * * *',
                                      watcher=SpanWatcher(data,
                                                          poll_seconds=600))
    history = scheduler.run(until=at(5))
    assert recorder.times == [at(2), at(2, 40), at(4)]
    assert ([r['trigger'][0]['kind'] for r in history
            ] == ['cron', 'new-data', 'cron'])
    assert lines[1] == ('next run at 2024-01-01T02:00:00+00:00; or earlier '
                        f'when a span appears in {data}/span-{{SPAN}}')


def test_triggers_during_a_run_are_coalesced(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    clock = FakeClock(START)

    def long_first_run():
        clock.advance(3.5 * 3600)  # 02:00 -> 05:30: three cron times pass
        (data / 'span-7').mkdir()

    scheduler, recorder, lines = make(tmp_path,
                                      clock=clock,
                                      cron='0 * * * *',
                                      watcher=SpanWatcher(data,
                                                          poll_seconds=300),
                                      during={1: long_first_run})

    history = scheduler.run(until=at(6, 30))

    assert recorder.times == [at(2), at(5, 30), at(6)]
    assert history[1]['trigger'] == [
        {
            'kind': 'cron',
            'due': '2024-01-01T03:00:00+00:00',
            'ticks': 3
        },
        {
            'kind': 'new-data',
            'due': '2024-01-01T05:30:00+00:00',
            'span': 7
        },
    ]
    assert ('trigger cron (2024-01-01T03:00:00+00:00, 3 ticks) came due during '
            'run #1; queued (at most one pending run)') in lines
    assert any(
        line.startswith('trigger new-data (span 7) came due during run #1')
        for line in lines)
    assert any(
        line.startswith('coalesced 2 triggers into one run') for line in lines)
    # Announced once idle again, after the coalesced run.
    assert next_run_lines(lines) == [
        'next run at 2024-01-01T02:00:00+00:00; or earlier when a span '
        f'appears in {data}/span-{{SPAN}}',
        'next run at 2024-01-01T06:00:00+00:00; or earlier when a span newer '
        f'than span 7 appears in {data}/span-{{SPAN}}',
        'next run at 2024-01-01T07:00:00+00:00; or earlier when a span newer '
        f'than span 7 appears in {data}/span-{{SPAN}}',
    ]


# Lock ------------------------------------------------------------------------

HOLDER = r'''
import fcntl, os, sys
lock_file = open(sys.argv[1], 'a+')
fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
lock_file.truncate(0)
lock_file.write(f'pid {os.getpid()} (test holder)\n')
lock_file.flush()
print('locked', flush=True)
sys.stdin.readline()
'''


def test_run_lock_excludes_second_holder(tmp_path):
    first, second = RunLock(tmp_path / 'x.lock'), RunLock(tmp_path / 'x.lock')
    assert first.acquire()
    assert not second.acquire()
    assert second.holder() == f'pid {os.getpid()}'
    first.release()
    assert second.acquire()
    second.release()


def test_scheduler_waits_for_lock_held_by_another_process(tmp_path):
    state = tmp_path / 'state'
    state.mkdir()
    holder = subprocess.Popen([sys.executable, '-c', HOLDER,
                               lock_path(state)],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        # Each run records whether the holder had been told to let go.
        released = threading.Event()
        runs = []
        lines = []
        scheduler = Scheduler(lambda: runs.append(released.is_set()) or {},
                              state,
                              cron='* * * * *',
                              max_runs=1,
                              tz='UTC',
                              clock=FakeClock(START, real_sleep=0.01),
                              echo=lines.append)
        thread = threading.Thread(target=scheduler.run,
                                  kwargs={'install_signal_handlers': False})
        thread.start()
        deadline = time.monotonic() + 10
        while not any('waiting for it' in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.02)
        assert runs == [], 'ran while another process held the lock'
        assert any(
            f'held by pid {holder.pid} (test holder)' in line for line in lines)

        released.set()
        holder.stdin.write('\n')
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        holder.kill()
        holder.wait()
    assert runs == [True], 'ran while another process held the lock'
    assert scheduler.history[0]['status'] == 'succeeded'
    assert any(
        line.startswith('pipeline lock acquired after waiting')
        for line in lines)


def test_scheduler_skips_when_lock_busy_and_on_busy_skip(tmp_path):
    state = tmp_path / 'state'
    manual_run = RunLock(lock_path(state))
    assert manual_run.acquire()
    scheduler, recorder, lines = make(tmp_path,
                                      cron='0 * * * *',
                                      on_busy='skip')
    history = scheduler.run(until=at(3, 30))
    assert recorder.times == []
    assert [r['status'] for r in history] == ['skipped', 'skipped']
    assert history[0]['error'] == f'lock held by pid {os.getpid()}'
    assert any('skipping this run' in line for line in lines)

    manual_run.release()
    scheduler, recorder, _ = make(tmp_path,
                                  clock=FakeClock(at(3, 30)),
                                  cron='0 * * * *',
                                  on_busy='skip')
    scheduler.run(until=at(4, 30))
    assert recorder.times == [at(4)]


def _pipeline_run(*args):
    return subprocess.Popen([sys.executable, '-m', 'pipeline', 'run', *args],
                            cwd=REPO,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)


def test_pipeline_run_waits_for_the_lock_unless_told_not_to(tmp_path):
    """`pipeline run` waits while another process (a scheduled run) holds
    the pipeline's lock, then runs; `--no-lock` (as the scheduler, which
    holds it, runs its child) does not wait. The runs stop at ExampleGen
    on a broken image: they got past the lock."""
    data = datasets.write_class_folders(str(tmp_path / 'data'), ['cat', 'dog'],
                                        per_class=4)
    # Found by ExampleGen, after the lock (the checks before it read no
    # image).
    broken = os.path.join(data, 'train', 'dog', 'broken.png')
    with open(broken, 'wb') as f:
        f.write(datasets.png_bytes(np.zeros((9, 9), np.uint8))[:40])
    home = str(tmp_path / 'home')
    state = os.path.join(home, 'scheduler', 'convnet')
    os.makedirs(state)
    flags = ('--model', 'convnet', '--data', data, '--home', home)
    holder = subprocess.Popen([sys.executable, '-c', HOLDER,
                               lock_path(state)],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE,
                              text=True)
    waiting = unlocked = None
    try:
        assert holder.stdout.readline().strip() == 'locked'
        waiting = _pipeline_run(*flags)
        unlocked = _pipeline_run(*flags, '--no-lock')
        for line in waiting.stderr:  # Until it says it waits.
            if 'waiting for the run in progress' in line:
                assert f'(pid {holder.pid} (test holder))' in line, line
                break
        else:
            raise AssertionError(f'ended without waiting: {waiting.wait()}')
        # Deadlines bound a hang only.
        _, log = unlocked.communicate(timeout=1800)
        assert unlocked.returncode == 2, log
        assert log.strip().splitlines()[-1].startswith(f'error: {broken}: ')
        assert waiting.poll() is None, 'ran while the lock was held'

        holder.stdin.write('\n')
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
        _, log = waiting.communicate(timeout=1800)
        assert waiting.returncode == 2, log
        assert log.strip().splitlines()[-1].startswith(f'error: {broken}: ')
    finally:
        for process in (holder, waiting, unlocked):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.skipif(shutil.which('flock') is None, reason='needs flock(1)')
def test_run_holds_the_lock_that_crontab_flock_uses(tmp_path):
    state = tmp_path / 'state'
    outcomes = []

    def run_pipeline():
        # What the documented crontab line would do while this run is going.
        probe = subprocess.run(['flock', '-n', lock_path(state), 'true'])
        outcomes.append(probe.returncode)
        return {}

    Scheduler(run_pipeline,
              state,
              cron='* * * * *',
              max_runs=1,
              tz='UTC',
              clock=FakeClock(START),
              echo=None).run()
    assert outcomes == [1]
    assert subprocess.run(['flock', '-n',
                           lock_path(state), 'true']).returncode == 0


# Signals ---------------------------------------------------------------------

CHILD = r'''
import os, sys, time, types
repo, state, data, markers, poll_seconds = sys.argv[1:6]
# Import pipeline.scheduler without running pipeline/__init__.py, which may
# import TFX (tens of seconds).
package = types.ModuleType('pipeline')
package.__path__ = [os.path.join(repo, 'pipeline')]
sys.modules['pipeline'] = package
from pipeline.clock import SystemClock
from pipeline.scheduler import Scheduler
from pipeline.spans import SpanWatcher

def run_pipeline():
    # A run lasts until the test writes the `release` marker.
    open(os.path.join(markers, 'run-started'), 'w').close()
    while not os.path.exists(os.path.join(markers, 'release')):
        time.sleep(0.01)
    open(os.path.join(markers, 'run-finished'), 'w').close()
    return {'ok': True}

Scheduler(run_pipeline, state, tz='UTC',
          watcher=SpanWatcher(data, 'span-{SPAN}',
                              poll_seconds=float(poll_seconds)),
          clock=SystemClock(tick_seconds=0.05)).run()
print('run() returned', flush=True)
'''


class Child:
    """The scheduler in a real subprocess, with its stdout in a file.

    It waits for a new span, polling every `poll_seconds`; a run lasts
    until `release()`.
    """

    def __init__(self, tmp_path, poll_seconds=0.1):
        self.data = tmp_path / 'data'
        self.markers = tmp_path / 'markers'
        self.state = tmp_path / 'state'
        for directory in (self.data, self.markers):
            directory.mkdir()
        self.stdout_path = tmp_path / 'stdout.txt'
        self.stderr_path = tmp_path / 'stderr.txt'
        with open(self.stdout_path, 'w') as out, \
                open(self.stderr_path, 'w') as err:
            self.process = subprocess.Popen([
                sys.executable, '-c', CHILD, REPO,
                str(self.state),
                str(self.data),
                str(self.markers),
                str(poll_seconds)
            ],
                                            stdout=out,
                                            stderr=err)

    def stdout(self):
        return self.stdout_path.read_text()

    def release(self):
        """Lets the run in progress (or the next) finish."""
        (self.markers / 'release').touch()

    def wait_for(self, condition, what, timeout=120):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                pytest.fail(f'{what} did not happen; stdout:\n{self.stdout()}\n'
                            f'stderr:\n{self.stderr_path.read_text()}')
            time.sleep(0.02)

    def finish(self, timeout=60):
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process.kill()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_while_idle_stops_promptly(tmp_path, signum):
    # Idle means sleeping until the next poll, an hour away: the scheduler
    # can only stop (well before finish()'s deadline) if the signal
    # interrupts that sleep.
    child = Child(tmp_path, poll_seconds=3600)
    child.wait_for(lambda: 'next run when' in child.stdout(), 'start-up')
    child.process.send_signal(signum)
    assert child.finish(timeout=60) == 0
    lines = child.stdout().splitlines()
    assert lines[-2:] == [
        f'scheduler stopped (received {signum.name}) after 0 run(s)',
        'run() returned'
    ]


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_during_run_lets_it_finish(tmp_path, signum):
    child = Child(tmp_path)
    child.wait_for(lambda: 'next run when' in child.stdout(), 'start-up')
    (child.data / 'span-1').mkdir()
    child.wait_for((child.markers / 'run-started').exists, 'run start')
    child.process.send_signal(signum)
    # The signal is taken while the run goes on; the run then ends.
    child.wait_for(lambda: 'will finish first' in child.stderr_path.read_text(),
                   'signal acknowledged')
    assert not (child.markers / 'run-finished').exists()
    child.release()
    assert child.finish(timeout=60) == 0
    assert (child.markers / 'run-finished').exists()
    assert [r['status'] for r in read_history(child.state)] == ['succeeded']
    assert 'run #1 will finish first' in child.stderr_path.read_text()
    assert child.stdout().splitlines()[-2] == (
        f'scheduler stopped (received {signum.name}) after 1 run(s)')


def test_second_signal_aborts_the_run(tmp_path):
    child = Child(tmp_path)  # Never released.
    child.wait_for(lambda: 'next run when' in child.stdout(), 'start-up')
    (child.data / 'span-1').mkdir()
    child.wait_for((child.markers / 'run-started').exists, 'run start')
    child.process.send_signal(signal.SIGTERM)
    child.wait_for(lambda: 'will finish first' in child.stderr_path.read_text(),
                   'first signal acknowledged')
    child.process.send_signal(signal.SIGTERM)
    assert child.finish(timeout=60) != 0
    assert not (child.markers / 'run-finished').exists()
    [record] = read_history(child.state)
    assert record['status'] == 'aborted'
    assert 'SchedulerAborted' in record['error']
    assert 'scheduler aborted' in child.stdout()
    # The lock died with the process.
    assert RunLock(lock_path(child.state)).acquire()


RUN_CHILD = r'''
import os, signal, sys, time
markers = sys.argv[1]

def interrupted(signum, frame):
    # As `pipeline run` does: cancel the engine's jobs, one line, 130.
    open(os.path.join(markers, 'cancelled-jobs'), 'w').close()
    print('error: run interrupted by SIGTERM', file=sys.stderr, flush=True)
    sys.exit(130)

signal.signal(signal.SIGTERM, interrupted)
open(os.path.join(markers, 'run-started'), 'w').close()
while True:
    time.sleep(0.01)
'''


def test_an_aborted_schedule_lets_its_run_cancel_its_engine_jobs(
        tmp_path, capfd):
    # The scheduler aborted (a second signal) while a run's child runs: the
    # child is sent SIGTERM, as a `run` interrupted by hand, so that it
    # cancels its Beam jobs on the engine, not killed outright.
    from pipeline import retrain  # pylint: disable=import-outside-toplevel
    from pipeline.scheduler import SchedulerAborted  # pylint: disable=import-outside-toplevel

    def abort(signum, frame):
        del signum, frame
        raise SchedulerAborted('second signal SIGTERM')

    def abort_once_started():
        while not (tmp_path / 'run-started').exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, abort)
    try:
        threading.Thread(target=abort_once_started, daemon=True).start()
        with pytest.raises(SchedulerAborted):
            retrain.child_summary(
                [sys.executable, '-c', RUN_CHILD,
                 str(tmp_path)])
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert (tmp_path / 'cancelled-jobs').exists()
    assert 'error: run interrupted by SIGTERM' in capfd.readouterr().err
