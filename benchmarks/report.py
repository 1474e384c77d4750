"""What every benchmark table says about itself: when, on what machine, by which command."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {gpu}, torch {torch.__version__}"


def dated(title: str, table: str) -> str:
    """The table under a header with the date, the machine and the command that made it."""
    command = " ".join(["python", *sys.argv])
    return f"## {title}\n\n{datetime.date.today().isoformat()}, {machine()}\n\n`{command}`\n\n{table}\n"


def write_markdown(path: Path, title: str, table: str) -> None:
    path.write_text(dated(title, table))
