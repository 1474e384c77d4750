#!/usr/bin/env bash
# Build .venv with the lab's dependencies (idempotent: a second run only checks them).
set -euo pipefail
cd "$(dirname "$0")"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The CPU wheel of torch first: an unpinned torch pulls gigabytes of CUDA packages. With a GPU, install the
# CUDA build of torch you want instead of this line; requirements.txt accepts any torch 2.x from 2.4 on.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
