"""Progress a person can watch: live lines on a terminal (a pseudo-terminal here), plain lines in a file."""

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

from lab.progress import PlainLines, Progress
from tests.test_learn_simple import ROOT, SMALL_SAC, run_script

TWO_RUNS = ["--agent", "sac_baseline", "--envs", "Pendulum-v1", "--seeds", "2", "--steps", "2000", "--workers", "2",
            *SMALL_SAC]


def on_a_terminal(cwd, script, *args, timeout=300) -> tuple[int, list[tuple[float, str]]]:
    """Run a script with its output on a pseudo-terminal; (exit code, [(seconds, text) of each read])."""
    ours, theirs = pty.openpty()
    process = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, stdout=theirs, stderr=theirs,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, close_fds=True)
    os.close(theirs)
    reads, started = [], time.monotonic()
    while time.monotonic() - started < timeout:
        ready, _, _ = select.select([ours], [], [], 1.0)
        if ready:
            try:
                data = os.read(ours, 65536)
            except OSError:  # the other end closed: the process is gone
                break
            if not data:
                break
            reads.append((time.monotonic() - started, data.decode(errors="replace")))
        elif process.poll() is not None:
            break
    os.close(ours)
    return process.wait(timeout=60), reads


def test_on_a_terminal_both_runs_progress_lines_refresh_in_place(tmp_path):
    code, reads = on_a_terminal(tmp_path, "learn_simple.py", *TWO_RUNS, "--name", "live")
    assert code == 0, "".join(text for _, text in reads)
    for seed in (0, 1):
        updates = []  # (time, step) each time the seed's line shows a new step count
        for seconds, text in reads:
            for step in re.findall(rf"seed {seed}\]\s+(\d+)/2000", text):
                if not updates or int(step) != updates[-1][1]:
                    updates.append((seconds, int(step)))
        assert len(updates) >= 4, updates  # it moved, several times, on one line
        gaps = [later[0] - earlier[0] for earlier, later in zip(updates, updates[1:])]
        assert max(gaps) < 10, updates
    assert any("\x1b[" in text for _, text in reads)  # redrawn in place: the terminal's control sequences
    assert "IQM final" in "".join(text for _, text in reads)


def test_hypertune_shows_its_trials_runs_on_a_terminal(tmp_path):
    code, reads = on_a_terminal(tmp_path, "hypertune.py", "--agent", "sac_baseline", "--envs", "Pendulum-v1",
                                "--steps", "1000", "--trials", "2", "--workers", "2", "--eval-episodes", "1",
                                "--param", "q_lr=1e-4:3e-3:log", *SMALL_SAC)
    output = "".join(text for _, text in reads)
    assert code == 0, output
    assert re.search(r"\[trial 0 sac_baseline Pendulum-v1 seed 0\]\s+\d+/1000", output)
    assert re.search(r"\[trial 1 sac_baseline Pendulum-v1 seed 0\]\s+\d+/1000", output)


def test_in_a_file_progress_is_plain_lines(tmp_path):
    result = run_script("learn_simple.py", tmp_path, *TWO_RUNS, "--eval-every", "500", "--name", "plain")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("[sac_baseline")]
    assert len(lines) >= 8  # each seed's four evaluations at least
    assert all(re.fullmatch(r"\[.*\] +\d+/2000 steps +\d+%  train .*  eval .*steps/s  \S+ left", line)
               for line in lines), lines


def test_plain_lines_come_at_evaluations_and_periodically():
    def report(step, evaluated=False):
        return Progress("run", step, 100, 10.0, None, -5.0, evaluated)

    every, rarely = io.StringIO(), io.StringIO()
    for lines, stream in ((PlainLines(every_s=0.0, stream=every), every), (PlainLines(every_s=3600, stream=rarely),
                                                                            rarely)):
        lines.update(report(10))
        lines.update(report(20))
        lines.update(report(50, evaluated=True))
        lines.update(report(60))
    assert len(every.getvalue().splitlines()) == 4
    # The first report, then the evaluation: nothing periodic within the hour.
    assert [line.split()[1] for line in rarely.getvalue().splitlines()] == ["10/100", "50/100"]
    assert "0:09 left" in rarely.getvalue()  # 90 steps at 10 steps/s
