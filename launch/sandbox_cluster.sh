#!/usr/bin/env bash
# Starts a sandbox cluster: one redis queue, the HTTP front end, and workers on CPU hosts.
# See launch/SANDBOX_CLUSTER.md. Every role runs as root, from a checkout with its .venv.
#
#   launch/sandbox_cluster.sh redis  --bind 10.0.0.5 --port 6379 --password SECRET
#   launch/sandbox_cluster.sh front  --redis redis://:SECRET@10.0.0.5:6379/0 --port 8080
#   launch/sandbox_cluster.sh worker --redis redis://:SECRET@10.0.0.5:6379/0 [--workers 64]
#   launch/sandbox_cluster.sh ssh    --redis redis://:SECRET@10.0.0.5:6379/0 --hosts "cpu1 cpu2"
#   launch/sandbox_cluster.sh local  --workers 2 --hosts 2 --port 8080     # all on this host
#
# redis/front/worker run in the foreground (use your process manager); `ssh` starts one
# detached worker per host (logs in runs/sandbox_worker.log there); `local` starts redis, the
# front end and N worker processes here and stops them all on Ctrl-C.
# Other flags go to `rstar-sandbox`: `front` passes them to `serve --redis`, `worker`/`ssh` to
# `worker`, and `local` splits them: --max-body-mib and --host to the front end, --queue and
# --lease-s to both, the rest (pool flags: --timeout-s, --jobs-per-worker, ...) to the workers.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
role="${1:-}"
shift || true
bind=127.0.0.1 port=6379 password="" redis_url="" hosts="" workers="" http_port=8080
declare -a extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bind) bind="$2"; shift 2 ;;
    --port) port="$2"; http_port="$2"; shift 2 ;;
    --password) password="$2"; shift 2 ;;
    --redis) redis_url="$2"; shift 2 ;;
    --hosts) hosts="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
sandbox="$repo/.venv/bin/rstar-sandbox"
declare -a front_extra=() worker_extra=()
# local mode: send each extra flag (and its value) to the command that takes it (cli.py).
split_extra() {
  local i=0 flag
  while ((i < ${#extra[@]})); do
    flag="${extra[i]}"
    case "$flag" in
      --host|--max-body-mib|--api-key-file|--queue|--lease-s)
        ((i + 1 < ${#extra[@]})) || { echo "$flag needs a value" >&2; exit 2; }
        flag="$flag=${extra[i + 1]}"; i=$((i + 1)) ;;
    esac
    case "$flag" in
      --host=*|--max-body-mib=*|--api-key-file=*|--trusted-network) front_extra+=("$flag") ;;
      --queue=*|--lease-s=*) front_extra+=("$flag"); worker_extra+=("$flag") ;;
      *) worker_extra+=("$flag") ;;
    esac
    i=$((i + 1))
  done
}
need_redis() { [[ -n "$redis_url" ]] || { echo "--redis URL is required for $role" >&2; exit 2; }; }
worker_args() { [[ -z "$workers" ]] || echo "--workers $workers"; }

case "$role" in
  redis)
    args=(--bind "$bind" --port "$port" --save "" --appendonly no --maxclients 10000)
    [[ -z "$password" ]] || args+=(--requirepass "$password")
    exec redis-server "${args[@]}" ;;
  front)
    need_redis
    exec "$sandbox" serve --host 0.0.0.0 --port "$http_port" \
      --redis "$redis_url" "${extra[@]}" ;;
  worker)
    need_redis
    # shellcheck disable=SC2046
    exec "$sandbox" worker --redis "$redis_url" $(worker_args) "${extra[@]}" ;;
  ssh)
    need_redis
    [[ -n "$hosts" ]] || { echo "--hosts \"h1 h2 ...\" is required for ssh" >&2; exit 2; }
    for host in $hosts; do
      # shellcheck disable=SC2029
      ssh "$host" "cd '$repo' && mkdir -p runs && nohup .venv/bin/rstar-sandbox worker \
        --redis '$redis_url' $(worker_args) ${extra[*]:-} > runs/sandbox_worker.log 2>&1 &"
      echo "worker started on $host"
    done ;;
  local)
    split_extra
    count="${hosts:-2}"
    pids=()
    # Stop the workers and the front end first, the queue last.
    stop_all() { for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done; }
    trap stop_all EXIT INT TERM
    redis-server --bind 127.0.0.1 --port "$((http_port + 1))" --save "" --appendonly no \
      > /dev/null & pids+=($!)
    url="redis://127.0.0.1:$((http_port + 1))/0"
    "$sandbox" serve --port "$http_port" --redis "$url" "${front_extra[@]}" & pids+=($!)
    for _ in $(seq "$count"); do
      # shellcheck disable=SC2046
      "$sandbox" worker --redis "$url" $(worker_args) "${worker_extra[@]}" & pids+=($!)
    done
    echo "sandbox cluster: http://127.0.0.1:$http_port (queue $url, $count workers); Ctrl-C stops it"
    wait ;;
  *)
    sed -n '2,19p' "$0"
    exit 2 ;;
esac
