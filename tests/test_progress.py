"""Progress that tells the truth: counters of ok, failed and to-do files; log lines and warnings
above the live bar, never on it; redraws that leave no stale text; an ETA that, once shown,
stays shown and moves smoothly. The live bar is read as a terminal shows it: the real CLI runs
in a pseudo-terminal and the bytes it wrote are replayed through a small terminal model."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from client.progress import Progress, duration_text
from client.rate import EtaSmoother, RateMeter, Reading
from client.terminal import StatusLine

from .videos import cut_short, write_video

ROOT = Path(__file__).resolve().parent.parent
GOOD = 4  # videos that decode whole, and one cut short
WIDTH = 160  # the pseudo-terminal's columns: wide enough that no bar is cut

# A bar as it must look on screen, whole to the end of its line (a stale tail or a log line
# written onto it does not match).
BAR = re.compile(r"\[[# ]{10}\] +(\d+)% (\d+) ok, (\d+) failed, (\d+) to do \| (ETA: measuring|ETA [0-9a-z ]+) \| "
                 r"(\d+)/(\d+) frames \| (rate: measuring|[\d.]+ frames/s)")
PLAIN = re.compile(r"progress: files: (\d+) ok, (\d+) failed, (\d+) to do; frames: (\d+) of (\d+) \(\d+%\); "
                   r"(?:rate: measuring|[\d.]+ frames/s over the last 10 s); (?:ETA once the rate is steady|ETA [0-9a-z ]+)")


class Screen:
    """What a terminal of ``width`` columns shows after these bytes: carriage return, newline,
    "erase to the end of the line" (CSI K) and printable text, wrapping at the width. ``seen``
    holds the status row as it stood before each carriage return (each state a person saw)."""

    def __init__(self, width: int) -> None:
        self.width, self.rows, self.row, self.col = width, [""], 0, 0
        self.seen: list[str] = []
        self.wrapped: list[str] = []  # each row that ran past the width, as it stood then

    def feed(self, data: str) -> None:
        i = 0
        while i < len(data):
            c = data[i]
            if c == "\x1b":
                m = re.match(r"\x1b\[(\d*)K", data[i:])
                assert m and m[1] in ("", "0"), f"unexpected escape {data[i:i + 8]!r}"
                self.rows[self.row] = self.rows[self.row][:self.col]
                i += len(m[0])
                continue
            if c == "\r":
                self.seen.append(self.rows[self.row])
                self.col = 0
            elif c == "\n":
                self.row += 1
                self.col = 0  # the pty's output processing turns "\n" into "\r\n"
                if self.row == len(self.rows):
                    self.rows.append("")
            else:
                if self.col >= self.width:
                    self.wrapped.append(self.rows[self.row])
                    self.row, self.col = self.row + 1, 0
                    if self.row == len(self.rows):
                        self.rows.append("")
                line = self.rows[self.row].ljust(self.col)
                self.rows[self.row] = line[:self.col] + c + line[self.col + 1:]
                self.col += 1
            i += 1


def run_in_terminal(cmd: list[str], *, width: int = WIDTH, timeout_s: float = 300.0) -> tuple[int, str]:
    """Run ``cmd`` with stdin, stdout and stderr on a new pseudo-terminal of ``width`` columns;
    its exit code and every byte it wrote there (decoded)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "", "LINES": ""})
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout_s)
            assert ready, "the run wrote nothing for too long"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=timeout_s), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# The real CLI, with a Python warning raised by its backend after a few batches (the run's
# middle), so a warning meets a live bar as any library's would; each batch also waits 0.1 s,
# so the run lasts long enough (~6 s of results) for its rate to be steady and the ETA shown.
_WARNING_RUN = """
import sys, time, warnings
from client import backends, bulk
from tests.fault_runner import Delegating

class Warns(Delegating):
    calls = 0
    def infer(self, lane, batch):
        Warns.calls += 1
        if Warns.calls == 20:  # after warm-up and the first files' batches
            warnings.warn("a library's warning in the middle of the run")
        time.sleep(0.1)  # a pace the machine's speed does not change: the rate gets steady mid-run
        return self.inner.infer(lane, batch)

make = backends.make_backend
backends.make_backend = lambda *a, **k: Warns(make(*a, **k))
sys.exit(bulk.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("progress") / "videos"
    src.mkdir()
    for i in range(GOOD):
        write_video(src / f"clip{i}.mp4", frames=48)
    cut_short(write_video(src / "damaged.mp4", frames=96, faststart=True), 0.5)  # opens, then ends early
    return src


@pytest.fixture(scope="module")
def terminal_run(videos: Path, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict]:
    out = tmp_path_factory.mktemp("progress-out") / "out"
    rc, text = run_in_terminal([sys.executable, "-c", _WARNING_RUN, str(videos), "--out", str(out),
                                "--model", str(model_path), "--batch", "4"])
    return rc, text, json.loads((out / "summary.json").read_text())


def test_the_live_bar_counts_ok_failed_and_to_do_files_and_ends_on_the_frames_written(terminal_run) -> None:
    rc, text, summary = terminal_run
    assert rc == 2, text[-3000:]  # one file failed
    screen = Screen(WIDTH)
    screen.feed(text)
    bars = [m for m in (BAR.fullmatch(row) for row in screen.seen + screen.rows) if m]
    assert len(bars) >= 3, text[-3000:]
    counters = [(int(m[2]), int(m[3]), int(m[4])) for m in bars]
    assert all(ok + failed + todo == GOOD + 1 and ok <= GOOD and failed <= 1 for ok, failed, todo in counters)
    final = bars[-1]
    assert (final[2], final[3], final[4]) == (str(GOOD), "1", "0") and final[1] == "100"
    assert final[6] == final[7] == str(summary["totals"]["frames"])  # the damaged file's missing frames are not work left


def test_every_redraw_erases_the_whole_previous_bar_and_nothing_wraps(terminal_run) -> None:
    _, text, _ = terminal_run
    screen = Screen(WIDTH)
    screen.feed(text)
    assert not [row for row in screen.wrapped if row.startswith("[")]  # a long log line may wrap, a bar never
    for row in screen.seen + screen.rows:
        if re.match(r"\[[# ]{10}\]", row):
            assert BAR.fullmatch(row), f"a bar with something else on its line: {row!r}"


def test_log_lines_and_warnings_print_above_the_bar_on_lines_of_their_own(terminal_run) -> None:
    _, text, _ = terminal_run
    screen = Screen(WIDTH)
    screen.feed(text)
    failed = [row for row in screen.rows if row.startswith("damaged.mp4: ")]
    warned = [row for row in screen.rows if "UserWarning: a library's warning in the middle of the run" in row]
    assert len(failed) == 1 and len(warned) == 1, screen.rows
    assert "[" not in warned[0].split("UserWarning")[0][-3:] and "frames/s" not in warned[0] + failed[0]
    assert "warnings.warn(" not in text  # the source line a warning quotes is left out: one line
    shown = screen.rows.index(warned[0])
    assert BAR.fullmatch(screen.rows[shown + 1]) or screen.rows[shown + 1].startswith(("damaged.mp4", "[")), \
        "the bar is drawn again under the line"


def test_once_the_eta_is_shown_no_later_redraw_hides_it(terminal_run) -> None:
    _, text, _ = terminal_run
    screen = Screen(WIDTH)
    screen.feed(text)
    etas = [m[5] for m in (BAR.fullmatch(row) for row in screen.seen) if m]
    shown = [i for i, e in enumerate(etas) if e != "ETA: measuring"]
    assert shown and etas[0] == "ETA: measuring", etas  # hidden at first, shown once the rate is steady
    assert all(etas[i] != "ETA: measuring" for i in range(shown[0], len(etas))), etas


def test_without_a_terminal_progress_is_whole_plain_lines_with_the_same_counters(videos: Path, model_path: Path,
                                                                                 tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(videos), "--out", str(tmp_path / "out"),
                           "--model", str(model_path)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = [PLAIN.fullmatch(line) for line in done.stderr.splitlines() if line.startswith("progress:")]
    assert lines and all(lines), done.stderr[-3000:]
    assert all(int(m[1]) + int(m[2]) + int(m[3]) == GOOD + 1 for m in lines)


def test_a_status_line_is_cut_to_the_terminal_s_width_so_it_never_wraps() -> None:
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
        with os.fdopen(slave, "w") as stream:  # closes the slave: the master then reads to its end
            line = StatusLine(stream)
            line.show("x" * 100)
            line.show("short")
            line.print_above("a log line")
            line.end()
        written = b""
        while select.select([master], [], [], 10)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: nothing more, the slave is closed
                break
            if not chunk:
                break
            written += chunk
        screen = Screen(40)
        screen.feed(written.decode())
        assert not screen.wrapped and screen.rows[:2] == ["a log line", "short"]
        assert "x" * 39 in written.decode() and "x" * 40 not in written.decode()
    finally:
        os.close(master)


# ---- the ETA's rule, on sequences of samples (time is fed, never waited for) ----

def readings(smoother: EtaSmoother, meter: RateMeter, *, t: float, frames: int, fps: float, seconds: float,
             batch: int = 8) -> tuple[float, int, list[bool]]:
    """Batches at ``fps`` for ``seconds`` into ``meter`` and ``smoother``; whether an ETA was shown after each."""
    shown = []
    end = t + seconds
    while t + batch / fps <= end + 1e-9:
        t, frames = t + batch / fps, frames + batch
        meter.add(t, frames)
        smoother.update(t, meter.reading())
        shown.append(smoother.shown)
    return t, frames, shown


def test_the_eta_is_hidden_until_the_rate_is_first_steady() -> None:
    smoother = EtaSmoother(smoothing_s=10.0)
    smoother.update(1.0, Reading(None, False))
    smoother.update(2.0, Reading(50.0, False))  # a rate, not yet steady
    assert not smoother.shown and smoother.eta_s(100) is None
    smoother.update(3.0, Reading(20.0, True))
    assert smoother.eta_s(100) == pytest.approx(5.0)


def test_once_shown_the_eta_stays_shown_whatever_the_rate_does() -> None:
    smoother, meter = EtaSmoother(), RateMeter()
    t, frames, first = readings(smoother, meter, t=0.0, frames=0, fps=20, seconds=8.0)
    assert first[-1] and not first[0]
    shown_from = first.index(True)
    assert all(first[shown_from:])
    for fps in (60, 8, 60, 8, 30):  # a pace that keeps the meter's two halves disagreeing
        t, frames, shown = readings(smoother, meter, t=t, frames=frames, fps=fps, seconds=2.0)
        assert all(shown)
    smoother.update(t + 1, Reading(None, False))  # no reading at all (a stall): still shown
    assert smoother.shown


def test_the_smoothed_eta_moves_over_seconds_not_in_one_redraw() -> None:
    smoother = EtaSmoother(smoothing_s=10.0)
    smoother.update(0.0, Reading(10.0, True))
    smoother.update(0.2, Reading(40.0, False))  # the window says 4x faster from now on
    smoother.update(0.4, Reading(40.0, False))  # a redraw later: 2% of the way, not the whole jump
    assert smoother.eta_s(1000) == pytest.approx(1000 / (10 + 30 * (1 - math.exp(-0.02))), rel=1e-6)
    assert smoother.eta_s(1000) > 90
    for i in range(3, 300):  # 60 s at the new pace: the ETA is the new rate's
        smoother.update(0.2 * i, Reading(40.0, True))
    assert smoother.eta_s(1000) == pytest.approx(25.0, rel=0.01)


def test_of_readings_at_one_time_the_last_holds_until_the_next_time() -> None:
    """A batch's frames arrive together: the reading after its first frame counts one frame of
    it, the one after its last counts all; only that one is the rate that held."""
    smoother = EtaSmoother(smoothing_s=10.0)
    smoother.update(0.0, Reading(20.0, True))
    for partial in (5.0, 9.0, 20.0):  # one batch's frames, all at t = 1
        smoother.update(1.0, Reading(partial, True))
    smoother.update(100.0, Reading(20.0, True))
    assert smoother.eta_s(200) == pytest.approx(10.0)


def shown_eta_s(line: str) -> float | None:
    """The ETA a progress line shows, in seconds (``42 s``, ``3 min 05 s``); None: none shown."""
    m = re.search(r"ETA (?:(\d+) min )?(\d+) s", line)
    return 60 * float(m[1] or 0) + float(m[2]) if m else None


def test_the_progress_eta_follows_a_change_of_pace_without_disappearing() -> None:
    clock = [100.0]
    progress = Progress(files=1, frames_estimate=5000, live=False, clock=lambda: clock[0])

    def deliver(fps: float, seconds: float) -> list[float | None]:
        shown, end = [], clock[0] + seconds
        while clock[0] + 8 / fps <= end + 1e-9:
            clock[0] += 8 / fps
            for _ in range(8):
                progress.frame()
            shown.append(shown_eta_s(progress.line()))
        return shown

    deliver(10, 12.0)
    assert shown_eta_s(progress.line()) == pytest.approx((5000 - progress.frames) / 10, rel=0.1)
    faster = deliver(40, 3.0)  # the window's halves disagree: the ETA stays, and moves down smoothly
    assert None not in faster and all(b <= a + 1 for a, b in zip(faster, faster[1:]))
    assert None not in deliver(40, 45.0)
    assert shown_eta_s(progress.line()) == pytest.approx((5000 - progress.frames) / 40, rel=0.1)


def test_a_failed_file_counts_as_failed_not_done_and_its_missing_frames_leave_the_work() -> None:
    progress = Progress(files=3, frames_estimate=300, live=False)
    for _ in range(140):
        progress.frame()
    progress.file_done("ok", frames=100, planned=100)
    progress.file_done("error", frames=40, planned=100)  # cut short: 60 frames that will never come
    assert progress.line().startswith("files: 1 ok, 1 failed, 1 to do; frames: 140 of 240 (58%);")


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"),
                                               (7620, "2 h 07 min")])
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
