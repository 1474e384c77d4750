"""What every benchmark table says about itself: when, on what machine, by which command."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

SIMULATORS = ("gymnasium", "mujoco", "box2d")


def version(package: str) -> str:
    try:
        return installed_version(package)
    except PackageNotFoundError:
        return "absent"


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    # The simulators' versions too: a new MuJoCo changes every learning curve, the same seed's included.
    simulators = ", ".join(f"{name} {version(name)}" for name in SIMULATORS)
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {gpu}, torch {torch.__version__}, {simulators}"


def dated(title: str, table: str) -> str:
    """The table under a header with the date, the machine and the command that made it."""
    command = " ".join(["python", *sys.argv])
    return f"## {title}\n\n{datetime.date.today().isoformat()}, {machine()}\n\n`{command}`\n\n{table}\n"


def write_markdown(path: Path, title: str, table: str) -> None:
    path.write_text(dated(title, table))
