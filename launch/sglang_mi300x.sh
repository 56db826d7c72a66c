#!/usr/bin/env bash
# SGLang rollout servers on one AMD MI300X node, each in a container of SGLang's ROCm image: one
# server per GPU (8 servers on ports BASE..BASE+7), or with --tp N one server per N GPUs. Waits
# until every server answers GET /health, then prints their URLs (one a line) and the trainer's
# override line, and writes the URLs to --urls-file for slurm_train.sh / tpu_vm.sh
# --rollout-urls-file. See launch/README.md. SHARED below is storage the trainer also mounts.
#
#   launch/sglang_mi300x.sh --model SHARED/ckpt/qwen3_14b_sft --api-key-file SHARED/keys/sglang.key \
#       --mount SHARED/runs/r2 --urls-file SHARED/runs/r2/sglang_urls.txt     # 8 servers, 1 GPU each
#   launch/sglang_mi300x.sh --tp 2 --model ... --api-key-file ... --mount ...  # 4 servers, 2 GPUs each
#   launch/sglang_mi300x.sh --stop [--tp 2]                                    # remove the containers
#   launch/sglang_mi300x.sh --dry-run --model ... --url-host mi300x-1 ...      # prints, runs nothing
#
# Options:
#   --model DIR          Hugging Face checkpoint directory on this node (required; mounted read-only
#                        at the same path). The trainer replaces the weights at each stage and step.
#   --tp N               GPUs per server, tensor parallel (default 1); must divide --gpus
#   --gpus N             GPUs to use, 0..N-1 (default 8)
#   --base-port PORT     first server's port; server i listens on PORT+i (default 30000)
#   --host ADDR          address the servers bind (default 0.0.0.0)
#   --url-host NAME      host name in the printed URLs (default: --host, or `hostname -f` when
#                        --host is 0.0.0.0)
#   --api-key-file FILE  the servers' API key (SGLang --api-key); the trainer needs the same file
#                        as config.rollout.api_key_file. Required when --host is beyond loopback.
#   --trusted-network    bind beyond loopback without an API key (anyone who reaches the port can
#                        make the server load any path it can read)
#   --mount DIR          also mount DIR read-only at the same path (repeatable): the trainer's
#                        weight_sync_dir (default WORKDIR/weight_sync), which the servers load from
#   --image IMAGE        docker image (default lmsysorg/sglang:v0.5.9-rocm720-mi30x, for gfx942;
#                        check that a tag exists on Docker Hub before pinning it)
#   --mem-fraction F     --mem-fraction-static: weights + KV cache share of GPU memory (default:
#                        SGLang's automatic choice)
#   --context-length N   --context-length (default: the model's); at least prompt + response budget
#   --urls-file FILE     write the URLs there, one a line
#   --wait-s S           how long all servers may take to come up (default 1800)
#   --poll-s S           seconds between health checks (default 5)
#   --stop               remove this layout's containers (docker rm -f) and exit
#   --dry-run            print the docker commands and the health-wait plan; run nothing
#   -h, --help           this text
# Flags after -- go to sglang.launch_server unchanged (e.g. -- --max-running-requests 256).
# Containers are named rstar-sglang-PORT and kept after they stop, for `docker logs`.
set -euo pipefail
prog=sglang_mi300x.sh
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$repo/launch/common.sh"

# gfx942 (MI300X/MI325X) image; SGLang's ROCm images bake in the AITER kernels and ROCm settings.
default_image=lmsysorg/sglang:v0.5.9-rocm720-mi30x
model="" tp=1 gpus=8 base_port=30000 host=0.0.0.0 url_host="" api_key_file="" trusted=0 image=$default_image
mem_fraction="" context_length="" urls_file="" wait_s=1800 poll_s=5 stop=0 dry_run=0
declare -a mounts=() extra=()
while (($# > 0)); do
  [[ $1 != --*=* ]] || set -- "${1%%=*}" "${1#*=}" "${@:2}"  # --flag=value as --flag value
  case "$1" in
    --model) need_value "$1" $#; model=$2; shift 2 ;;
    --tp) need_value "$1" $#; tp=$2; shift 2 ;;
    --gpus) need_value "$1" $#; gpus=$2; shift 2 ;;
    --base-port) need_value "$1" $#; base_port=$2; shift 2 ;;
    --host) need_value "$1" $#; host=$2; shift 2 ;;
    --url-host) need_value "$1" $#; url_host=$2; shift 2 ;;
    --api-key-file) need_value "$1" $#; api_key_file=$2; shift 2 ;;
    --trusted-network) trusted=1; shift ;;
    --mount) need_value "$1" $#; mounts+=("$2"); shift 2 ;;
    --image) need_value "$1" $#; image=$2; shift 2 ;;
    --mem-fraction) need_value "$1" $#; mem_fraction=$2; shift 2 ;;
    --context-length) need_value "$1" $#; context_length=$2; shift 2 ;;
    --urls-file) need_value "$1" $#; urls_file=$2; shift 2 ;;
    --wait-s) need_value "$1" $#; wait_s=$2; shift 2 ;;
    --poll-s) need_value "$1" $#; poll_s=$2; shift 2 ;;
    --stop) stop=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help; sglang.launch_server flags go after --)" ;;
  esac
done

# abs_path PATH: PATH made absolute (docker -v needs absolute paths); PATH must exist.
abs_path() {
  if [[ -d $1 ]]; then (cd "$1" && pwd); else printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; fi
}

need_int --tp "$tp"
need_int --gpus "$gpus"
need_int --base-port "$base_port"
((gpus % tp == 0)) || die "--tp $tp does not divide --gpus $gpus"
num_servers=$((gpus / tp))
((base_port + num_servers - 1 <= 65535)) || die "--base-port $base_port + $num_servers servers passes port 65535"
names=() ports=()
for ((i = 0; i < num_servers; i++)); do
  ports+=($((base_port + i)))
  names+=("rstar-sglang-$((base_port + i))")
done

if ((stop)); then
  ((dry_run)) || command -v docker >/dev/null || fail "docker not found on PATH"
  run docker rm -f "${names[@]}"
  exit 0
fi

[[ -n $model ]] || die "--model DIR is required (a Hugging Face checkpoint directory on this node)"
[[ -f $model/config.json ]] || die "--model $model holds no config.json (a Hugging Face checkpoint directory)"
model=$(abs_path "$model")
[[ $wait_s =~ ^[0-9]+$ ]] || die "--wait-s must be a whole number of seconds, got '$wait_s'"
[[ $poll_s =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--poll-s must be a number of seconds, got '$poll_s'"
[[ -z $context_length ]] || need_int --context-length "$context_length"
if [[ -n $mem_fraction ]]; then
  [[ $mem_fraction =~ ^0?\.[0-9]*[1-9][0-9]*$ ]] || die "--mem-fraction must be in (0, 1), got '$mem_fraction'"
fi
for ((i = 0; i < ${#mounts[@]}; i++)); do
  [[ -d ${mounts[i]} ]] || die "--mount ${mounts[i]}: no such directory (docker would create an empty one)"
  mounts[i]=$(abs_path "${mounts[i]}")
done
if [[ -n $api_key_file ]]; then
  [[ -f $api_key_file ]] || die "--api-key-file $api_key_file: no such file"
  api_key_file=$(abs_path "$api_key_file")
fi
# As rstar-serve and rstar-sandbox do: the weight-update route loads any path it is given, so a
# server reachable from the network needs a key unless the network is declared trusted.
case $host in 127.* | localhost | ::1) loopback=1 ;; *) loopback=0 ;; esac
if ((!loopback && !trusted)) && [[ -z $api_key_file ]]; then
  die "--host $host is beyond loopback: give --api-key-file FILE (or --trusted-network); the servers'" \
    "/update_weights_from_disk loads any path it is given"
fi
if [[ -z $url_host ]]; then
  case $host in 0.0.0.0 | ::) url_host=$(hostname -f) ;; *) url_host=$host ;; esac
fi
if ((!dry_run)); then
  for tool in docker curl; do command -v "$tool" >/dev/null || fail "$tool not found on PATH"; done
fi

urls=() gpu_lists=()
for ((i = 0; i < num_servers; i++)); do
  urls+=("http://$url_host:${ports[i]}")
  gpu_lists+=("$(seq -s, $((i * tp)) $((i * tp + tp - 1)))")
done

# Docker flags from SGLang's ROCm instructions: the GPUs (/dev/kfd, /dev/dri, group video), host
# networking (each server binds its own port on the node), host IPC and a large /dev/shm for the
# TP workers, ptrace and no seccomp filter for the ROCm runtime. No --rm: a server that dies keeps
# its container, so `docker logs` can say why.
docker_args=(--network=host --ipc=host --device=/dev/kfd --device=/dev/dri --group-add video
  --cap-add=SYS_PTRACE --security-opt seccomp=unconfined --shm-size 16G
  # Baked into the image already; set here so that an image without it still uses AITER kernels.
  -e SGLANG_USE_AITER=1
  -v "$model:$model:ro")
for dir in "${mounts[@]}"; do docker_args+=(-v "$dir:$dir:ro"); done
# --skip-tokenizer-init: the trainer sends token ids and reads token ids (and so needs no stop
# strings); --enable-metrics: GET /metrics for Prometheus.
server_args=(--model-path "$model" --host "$host" --tp-size "$tp" --skip-tokenizer-init --enable-metrics)
[[ -z $mem_fraction ]] || server_args+=(--mem-fraction-static "$mem_fraction")
[[ -z $context_length ]] || server_args+=(--context-length "$context_length")
# The key reaches SGLang as `--api-key KEY` (it has no key-file flag). To keep it out of this
# script's output, `docker inspect` and the host's shell history, the file is mounted and read
# inside the container; the key is still visible in the server's own command line (`ps`).
key_in_container=/run/secrets/sglang_api_key
if [[ -n $api_key_file ]]; then
  docker_args+=(-v "$api_key_file:$key_in_container:ro")
  launch=(sh -c "exec python3 -m sglang.launch_server \"\$@\" --api-key \"\$(cat $key_in_container)\"" sglang)
else
  launch=(python3 -m sglang.launch_server)
fi

if ((dry_run)); then echo "# $num_servers server(s), $tp GPU(s) each, image $image"; fi
for ((i = 0; i < num_servers; i++)); do
  cmd=(docker run -d --name "${names[i]}" "${docker_args[@]}" -e "HIP_VISIBLE_DEVICES=${gpu_lists[i]}" "$image"
    "${launch[@]}" "${server_args[@]}" --port "${ports[i]}" "${extra[@]}")
  if ((dry_run)); then show "${cmd[@]}"; else show "${cmd[@]}" >&2; "${cmd[@]}" >/dev/null; fi
done

# GET /health answers 503 until the server has loaded and warmed up, then (SGLang 0.5.x) runs a
# one-token generation and answers 200, or 503 after SGLANG_HEALTH_CHECK_TIMEOUT (20 s); curl's
# limit is longer than that. It needs no API key. Loading a large model and compiling kernels on
# first use can take many minutes, hence the long default --wait-s.
health=(curl -fsS -o /dev/null --max-time 30)
if ((dry_run)); then
  echo "# wait up to ${wait_s} s in all for each server's GET /health to answer 200, trying every ${poll_s} s;"
  echo "# stop with an error naming the first server whose container exits or that is not up in time:"
  for ((i = 0; i < num_servers; i++)); do
    echo "# ${names[i]}: GPUs ${gpu_lists[i]}, ${urls[i]}"
    show "${health[@]}" "${urls[i]}/health"
  done
else
  deadline=$((SECONDS + wait_s))
  for ((i = 0; i < num_servers; i++)); do
    what="server ${names[i]} (${urls[i]}, GPUs ${gpu_lists[i]})"
    echo "$prog: waiting for $what" >&2
    until "${health[@]}" "${urls[i]}/health" 2>/dev/null; do
      if [[ $(docker inspect -f '{{.State.Running}}' "${names[i]}" 2>/dev/null) != true ]]; then
        echo "$prog: error: $what stopped before answering GET /health; its last log lines:" >&2
        docker logs --tail 30 "${names[i]}" >&2 || true
        exit 1
      fi
      if ((SECONDS >= deadline)); then
        fail "$what did not answer GET /health with 200 within ${wait_s} s; see docker logs ${names[i]}" \
          "(and $0 --stop to remove the containers)"
      fi
      sleep "$poll_s"
    done
  done
fi

if [[ -n $urls_file ]]; then
  if ((dry_run)); then
    echo "# write the ${num_servers} URL(s) below to $urls_file"
  else
    mkdir -p "$(dirname "$urls_file")"
    printf '%s\n' "${urls[@]}" >"$urls_file"
    echo "$prog: wrote ${num_servers} URL(s) to $urls_file" >&2
  fi
fi
printf '%s\n' "${urls[@]}"
overrides="--config.rollout.backend=sglang --config.rollout.urls='$(urls_tuple "${urls[@]}")'"
[[ -z $api_key_file ]] || overrides+=" --config.rollout.api_key_file=$(printf '%q' "$api_key_file")"
echo "$overrides"
