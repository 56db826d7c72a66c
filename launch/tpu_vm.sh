#!/usr/bin/env bash
# JAX training on a Cloud TPU VM slice: the same trainer command on every worker at once, through
# `gcloud compute tpus tpu-vm ssh --worker=all`; jax.distributed.initialize() finds the other
# workers from the TPU metadata (config.distributed.mode=auto). See launch/README.md.
#
#   launch/tpu_vm.sh --name v5p-128-a --zone us-east5-a --project my-project \
#       --setup --git-url https://github.com/ORG/rstar_jax.git     # clone and install on every worker
#   launch/tpu_vm.sh --name v5p-128-a --zone us-east5-a --project my-project \
#       --config experiments/rstar2_qwen3_14b.py:policy=GCSFUSE/ckpt/sft,data=GCSFUSE/data --workdir GCSFUSE/runs/r2 \
#       --rollout-urls-file sglang_urls.txt --sandbox-url http://10.0.0.5:8080
#   launch/tpu_vm.sh --dry-run --name ... --zone ... --config ... --workdir ...   # prints, runs nothing
#
# Options:
#   --name NAME                  the TPU VM (slice) name (required)
#   --zone ZONE                  its zone (required)
#   --project PROJECT            its project (default: gcloud's configured project)
#   --repo-dir DIR               the checkout on the workers, relative to the ssh user's home or
#                                absolute (default: rstar_jax); the trainer runs DIR/.venv/bin/python
#   --config FILE[:ARG]          experiment config, relative to DIR (required unless --setup alone)
#   --workdir DIR                run directory that every worker shares: a GCS-fuse mount, NFS or
#                                Filestore path, the same on all workers (required unless --setup
#                                alone). All workers write checkpoint shards there.
#   --rollout-urls-file FILE     rollout servers, one URL a line (read here, on this machine)
#   --rollout-api-key-file FILE  the rollout servers' API key, a path on the workers
#   --sandbox-url URL            sandbox front end, e.g. http://HOST:8080
#   --sandbox-api-key-file FILE  its API key, a path on the workers
#   --setup                      first, on every worker: clone (with --git-url, if DIR is absent),
#                                create DIR/.venv and pip install -e . 'jax[tpu]'
#   --git-url URL                repository to clone for --setup
#   --dry-run                    print the commands instead of running them
#   -h, --help                   this text
# Flags after -- go to the trainer unchanged. The trainer runs in the foreground, tied to the ssh
# connections: start this script from tmux or screen (or a VM) so that it outlives your terminal.
set -euo pipefail
prog=tpu_vm.sh
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$repo/launch/common.sh"

name="" zone="" project="" repo_dir=rstar_jax config="" workdir="" urls_file="" rollout_api_key_file=""
sandbox_url="" sandbox_api_key_file="" setup=0 git_url="" dry_run=0
declare -a extra=() rollout_urls=()
while (($# > 0)); do
  [[ $1 != --*=* ]] || set -- "${1%%=*}" "${1#*=}" "${@:2}"  # --flag=value as --flag value
  if trainer_option "$1" "${2-}" $#; then shift 2; continue; fi
  case "$1" in
    --name) need_value "$1" $#; name=$2; shift 2 ;;
    --zone) need_value "$1" $#; zone=$2; shift 2 ;;
    --project) need_value "$1" $#; project=$2; shift 2 ;;
    --repo-dir) need_value "$1" $#; repo_dir=$2; shift 2 ;;
    --setup) setup=1; shift ;;
    --git-url) need_value "$1" $#; git_url=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help; trainer flags go after --)" ;;
  esac
done

[[ -n $name ]] || die "--name NAME is required (the TPU VM)"
[[ -n $zone ]] || die "--zone ZONE is required"
[[ -z $git_url || $setup == 1 ]] || die "--git-url is only used with --setup"
train=1
if [[ -z $config && -z $workdir && $setup == 1 ]]; then
  train=0  # --setup alone
else
  [[ -n $config ]] || die "--config FILE[:ARG] is required (e.g. experiments/rstar2_qwen3_14b.py:release)"
  [[ -n $workdir ]] || die "--workdir DIR is required (a directory every worker shares, e.g. a GCS-fuse mount)"
fi
[[ -z $urls_file ]] || read_urls_file "$urls_file"
[[ -z $sandbox_url ]] || need_http_url --sandbox-url "$sandbox_url"
if ((train)) && [[ $workdir != /* ]]; then
  # Not an error (a relative path is legal), but each worker would write its own copy under its
  # checkout: checkpoints could not be restored and the weight syncs would not reach the servers.
  echo "$prog: warning: --workdir $workdir is relative to $repo_dir on each worker, which the" \
    "workers do not share; give a shared path (a GCS-fuse mount, NFS or Filestore)" >&2
fi
if ((!dry_run)); then
  command -v gcloud >/dev/null || fail "gcloud not found on PATH (the Google Cloud CLI); --dry-run prints the commands"
fi

# The checkout directory for the remote shell; a leading ~/ stays unquoted so that it expands there.
if [[ $repo_dir == "~/"* ]]; then
  remote_repo="~/$(quote_words "${repo_dir#\~/}")"
else
  remote_repo=$(quote_words "$repo_dir")
fi

ssh_args=(compute tpus tpu-vm ssh "$name" --zone "$zone")
[[ -z $project ]] || ssh_args+=(--project "$project")
ssh_args+=(--worker=all)

if ((setup)); then
  setup_command="cd $remote_repo && python3 -m venv .venv && .venv/bin/pip install -e . 'jax[tpu]'"
  if [[ -n $git_url ]]; then
    setup_command="if [ ! -d $remote_repo ]; then git clone $(quote_words "$git_url") $remote_repo; fi && $setup_command"
  fi
  run gcloud "${ssh_args[@]}" --command "$setup_command"
fi
if ((train)); then
  trainer_args
  run gcloud "${ssh_args[@]}" --command "cd $remote_repo && $(quote_words .venv/bin/python "${trainer_args[@]}")"
fi
