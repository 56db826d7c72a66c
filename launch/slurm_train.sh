#!/usr/bin/env bash
# JAX multi-host training on GPU nodes under SLURM: srun starts one trainer process per node, which
# drives all of that node's GPUs; jax.distributed.initialize() finds its peers from SLURM's
# variables (config.distributed.mode=auto). See launch/README.md. Submit it from the repo root, or
# run it inside an allocation (salloc). SHARED below is a directory every node mounts at one path.
#
#   sbatch launch/slurm_train.sh --config experiments/rstar2_qwen3_14b.py:policy=SHARED/ckpt/sft,data=SHARED/data \
#       --workdir SHARED/runs/r2 --rollout-urls-file SHARED/runs/r2/sglang_urls.txt \
#       --rollout-api-key-file SHARED/keys/sglang.key \
#       --sandbox-url http://cpu0:8080 --sandbox-api-key-file SHARED/keys/sandbox.key
#   sbatch --nodes=2 --time=48:00:00 launch/slurm_train.sh --config ... --workdir ... \
#       -- --config.rl.temperature=1.2            # flags after -- go to the trainer unchanged
#   launch/slurm_train.sh --dry-run --config ... --workdir ...   # prints the commands, runs nothing
#
# Options:
#   --config FILE[:ARG]          experiment config, relative to the repo root (required)
#   --workdir DIR                run directory on storage every node shares (required)
#   --rollout-urls-file FILE     rollout servers, one URL a line (sglang_mi300x.sh --urls-file);
#                                sets config.rollout.backend=sglang and config.rollout.urls
#   --rollout-api-key-file FILE  the rollout servers' API key (config.rollout.api_key_file)
#   --sandbox-url URL            sandbox front end, e.g. http://HOST:8080 (config.sandbox.url)
#   --sandbox-api-key-file FILE  its API key (config.sandbox.api_key_file)
#   --venv DIR                   virtualenv on every node (default: the repo's .venv)
#   --gpus-per-node N            GPUs each process drives (default: $SLURM_GPUS_ON_NODE, else 8)
#   --coordinator-port PORT      JAX coordinator port on the first node (default: JAX's choice,
#                                61440 + job id mod 4096)
#   --dry-run                    print the commands instead of running them
#   -h, --help                   this text
# The node count comes from the allocation (sbatch --nodes=N overrides the default below).
#SBATCH --job-name=rstar-train
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --output=%x-%j.out
set -euo pipefail
prog=slurm_train.sh

# The repo root. sbatch runs a copy of this script from its spool directory, so there the script's
# own location says nothing and the submit directory (the repo root, as in the usage) is used.
repo=""
for candidate in "$(cd "$(dirname "$0")/.." && pwd)" "${SLURM_SUBMIT_DIR:-}"; do
  if [[ -n $candidate && -f $candidate/rstar_jax/main.py ]]; then repo=$candidate; break; fi
done
if [[ -z $repo ]]; then
  echo "$prog: error: cannot find the repository (rstar_jax/main.py): submit from the repo root," \
    "e.g. cd rstar_jax_checkout && sbatch launch/slurm_train.sh ..." >&2
  exit 2
fi
# shellcheck source=launch/common.sh
source "$repo/launch/common.sh"

config="" workdir="" urls_file="" rollout_api_key_file="" sandbox_url="" sandbox_api_key_file=""
venv="$repo/.venv" gpus_per_node="${SLURM_GPUS_ON_NODE:-8}" coordinator_port="" dry_run=0
declare -a extra=() rollout_urls=()
while (($# > 0)); do
  [[ $1 != --*=* ]] || set -- "${1%%=*}" "${1#*=}" "${@:2}"  # --flag=value as --flag value
  if trainer_option "$1" "${2-}" $#; then shift 2; continue; fi
  case "$1" in
    --venv) need_value "$1" $#; venv=$2; shift 2 ;;
    --gpus-per-node) need_value "$1" $#; gpus_per_node=$2; shift 2 ;;
    --coordinator-port) need_value "$1" $#; coordinator_port=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help; trainer flags go after --)" ;;
  esac
done

[[ -n $config ]] || die "--config FILE[:ARG] is required (e.g. experiments/rstar2_qwen3_14b.py:release)"
[[ -n $workdir ]] || die "--workdir DIR is required (a directory every node shares)"
config_file=${config%%:*}
[[ $config_file == /* ]] || config_file="$repo/$config_file"
[[ -f $config_file ]] || die "--config $config: no such file $config_file"
need_int --gpus-per-node "$gpus_per_node"
if [[ -n $coordinator_port ]]; then
  need_int --coordinator-port "$coordinator_port"
  ((coordinator_port <= 65535)) || die "--coordinator-port must be at most 65535, got $coordinator_port"
fi
[[ -z $urls_file ]] || read_urls_file "$urls_file"
[[ -z $sandbox_url ]] || need_http_url --sandbox-url "$sandbox_url"
# Key files are read by the trainer on every node; this script runs on the first node of the
# allocation, which sees the same shared paths, so a typo is caught here rather than on 8 nodes.
for key_flag in rollout_api_key_file sandbox_api_key_file; do
  key=${!key_flag}
  [[ -z $key || -f $key ]] || die "--${key_flag//_/-} $key: no such file"
done
python="$venv/bin/python"
[[ -x $python ]] || die "--venv $venv has no bin/python (python3 -m venv .venv && .venv/bin/pip install -e .)"
if ((!dry_run)); then
  [[ -n ${SLURM_JOB_ID:-} ]] || die "not inside a SLURM allocation (SLURM_JOB_ID is unset): submit with" \
    "sbatch launch/slurm_train.sh ..., or run it under salloc; --dry-run prints the commands"
  command -v srun >/dev/null || fail "srun not found on PATH"
fi

# Environment for JAX on GPU, inherited by every task (srun --export=ALL). A value already set in
# the caller's environment is kept.
# XLA preallocates 75% of each GPU by default, leaving room for other users of the GPU; here the
# trainer is the GPU's only user (rollouts run on their own servers or inside this process).
set_env XLA_PYTHON_CLIENT_MEM_FRACTION "${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# Under SLURM, jax.distributed.initialize() defaults local_device_ids to [SLURM_LOCALID], i.e. one
# GPU per process (jax/_src/clusters/cluster.py), which suits one task per GPU. With one task per
# node it would leave all but GPU 0 idle, so name all of the node's GPUs; initialize() reads
# JAX_LOCAL_DEVICE_IDS when no local_device_ids is passed (jax/_src/distributed.py).
set_env JAX_LOCAL_DEVICE_IDS "${JAX_LOCAL_DEVICE_IDS:-$(seq -s, 0 $((gpus_per_node - 1)))}"
# JAX derives the coordinator port from the job id (61440 + id mod 4096, jax/_src/clusters/
# slurm_cluster.py); set one only if that range is firewalled or taken.
[[ -z $coordinator_port ]] || set_env JAX_COORDINATOR_PORT "$coordinator_port"
# No NCCL_* settings: the right NCCL_SOCKET_IFNAME / NCCL_IB_HCA depend on the site's network, and
# whatever the site's modules export is passed on to the tasks unchanged.

nodes=${SLURM_JOB_NUM_NODES:-8}
# --nodes/--ntasks are explicit so that an allocation made with more tasks per node (salloc
# --ntasks-per-node=8) still gets one process per node. --export=ALL passes the variables above
# even where the site sets SLURM_EXPORT_ENV=NONE. --kill-on-bad-exit stops all processes when one
# fails, instead of leaving the rest blocked in a collective until JAX's heartbeat timeout.
srun_args=(--nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --export=ALL --kill-on-bad-exit=1
  --chdir="$repo")
# Since Slurm 22.05 srun does not inherit sbatch's --cpus-per-task, so a task would get one CPU; the
# trainer's input pipeline, reward workers and rollout client threads need the node's CPUs.
[[ -z ${SLURM_CPUS_ON_NODE:-} ]] || srun_args+=(--cpus-per-task="$SLURM_CPUS_ON_NODE")

trainer_args
run srun "${srun_args[@]}" "$python" "${trainer_args[@]}"
