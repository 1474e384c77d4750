"""benchmarks/validation.py end to end, at a smoke-test budget: jobs, records, the table, --resume, bad input."""

import datetime
import json

from tests.test_learn_simple import run_script

SMOKE = ("--only", "sac", "--steps", "200", "--seeds", "1", "--eval-episodes", "1", "--name", "v")


def test_validation_runs_every_job_tabulates_and_resumes(tmp_path):
    result = run_script("benchmarks/validation.py", tmp_path, *SMOKE, "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    for env in ("LunarLanderContinuous-v3", "HalfCheetah-v5"):
        record = json.loads((tmp_path / "runs/v/lab_sac_baseline" / env / "seed_0/result.json").read_text())
        assert [step for step, _ in record["evaluations"]] == [40, 80, 120, 160, 200]  # a fifth of the budget
        final = record["final_return"]
        assert f"| sac | {env} | 200 | lab sac_baseline | defaults | 1/1 | {final:.1f} | [{final:.1f}, {final:.1f}] |" \
            in result.stdout
    again = run_script("benchmarks/validation.py", tmp_path, *SMOKE, "--resume", timeout=300)
    assert again.returncode == 0, again.stderr
    jobs = 2 if "stable_baselines3 is not installed" in result.stdout else 4  # the peer where it is installed
    assert f"{jobs} jobs, {jobs} finished already" in again.stdout
    table = result.stdout[result.stdout.index("| group |"):]
    assert again.stdout[again.stdout.index("| group |"):] == table  # the same table, from the stored records
    assert f"{datetime.date.today().isoformat()}, " in result.stdout and "--name v" in result.stdout  # when, how


def test_an_existing_name_without_resume_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "runs" / "v").mkdir(parents=True)
    result = run_script("benchmarks/validation.py", tmp_path, *SMOKE, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "runs/v exists" in lines[0], result.stderr


def test_every_benchmark_table_names_the_simulators_versions():
    from benchmarks.report import machine
    from importlib.metadata import version
    line = machine()
    assert f"gymnasium {version('gymnasium')}" in line and f"mujoco {version('mujoco')}" in line, line
