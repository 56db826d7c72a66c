#!/usr/bin/env bash
# Prepares a local Code Judge (0xWJ/code-judge, the peer of benchmarks/sandbox_bench.py) to run
# from the checkout you give, in its own virtual environment under a directory you name:
#
#   git clone https://github.com/0xWJ/code-judge ../code-judge && git -C ../code-judge checkout f809f35
#   benchmarks/code_judge_setup.sh ../code-judge runs
#
# Nothing is copied: the benchmark runs the API (uvicorn app.main:app) and the workers
# (run_workers.py) from the checkout, with the environment of SANDBOX.md (8 workers, 2 API
# processes, 4 s limit, a raised redis connection pool, the interpreter called directly).
# Prints the path of the virtual environment. Re-running it only installs what is missing.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 CODE_JUDGE_DIR RUNS_DIR" >&2
  exit 2
fi
src="$(cd "$1" && pwd)"
if [[ ! -f "$src/app/main.py" || ! -f "$src/run_workers.py" || ! -f "$src/requirements.txt" ]]; then
  echo "$src is not a Code Judge checkout (no app/main.py, run_workers.py, requirements.txt)" >&2
  exit 1
fi
mkdir -p "$2"
venv="$(cd "$2" && pwd)/code_judge_venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$src/requirements.txt" >&2
echo "$venv"
