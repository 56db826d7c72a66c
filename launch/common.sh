# Shared by launch/slurm_train.sh, launch/tpu_vm.sh and launch/sglang_mi300x.sh (sourced, not run):
# error exits, dry-run printing, the rollout URL list and the trainer's command line.
#
# The sourcing script sets `prog` (its name, for messages) and `dry_run` (0 or 1) first.
# Exit codes: 2 for bad usage (unknown option, missing or bad value), 1 for a failure at run time.

# usage FILE: prints FILE's opening comment block (the lines after the shebang that start with
# "#" and a space, or are a bare "#"), without the "# ".
usage() {
  awk 'NR == 1 { next } /^#( |$)/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

die() { echo "$prog: error: $*" >&2; exit 2; }
fail() { echo "$prog: error: $*" >&2; exit 1; }

# quote WORD: WORD as the shell reads it back: unchanged when made only of characters no shell
# treats specially, else in single quotes (a ' inside becomes '\''). Easier to read than printf %q.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# quote_words WORD...: the words quoted and joined by spaces: one command line for a shell.
quote_words() {
  local out="" word
  for word in "$@"; do out+="$(quote "$word") "; done
  printf '%s' "${out% }"
}

# show CMD ARGS...: the command as one line, "+ " and the quoted words, so the line can be pasted
# into bash and tests can split it with shlex.
show() {
  printf '+ %s\n' "$(quote_words "$@")"
}

# run CMD ARGS...: with --dry-run prints the command (stdout) and runs nothing; otherwise logs it
# to stderr, set -x style, and runs it.
run() {
  if ((dry_run)); then
    show "$@"
  else
    show "$@" >&2
    "$@"
  fi
}

# set_env NAME VALUE: exports NAME for the commands that follow (printed as `+ export NAME=VALUE`).
set_env() {
  if ((dry_run)); then show export "$1=$2"; else show export "$1=$2" >&2; fi
  export "$1=$2"
}

# need_value FLAG ARGC: FLAG, with ARGC arguments left including itself, must have a value after it.
need_value() {
  (($2 >= 2)) || die "$1 needs a value"
}

# trainer_option OPTION VALUE NUM_ARGS: sets the variable of an option slurm_train.sh and tpu_vm.sh
# share (config, workdir, urls_file, rollout_api_key_file, sandbox_url, sandbox_api_key_file);
# returns 1 for any other option. The caller shifts 2 when it returns 0.
trainer_option() {
  case "$1" in
    --config | --workdir | --rollout-urls-file | --rollout-api-key-file | --sandbox-url | --sandbox-api-key-file)
      need_value "$1" "$3" ;;
    *) return 1 ;;
  esac
  case "$1" in
    --config) config=$2 ;;
    --workdir) workdir=$2 ;;
    --rollout-urls-file) urls_file=$2 ;;
    --rollout-api-key-file) rollout_api_key_file=$2 ;;
    --sandbox-url) sandbox_url=$2 ;;
    --sandbox-api-key-file) sandbox_api_key_file=$2 ;;
  esac
}

# need_int FLAG VALUE: VALUE must be a positive integer.
need_int() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

# need_http_url FLAG VALUE: VALUE must look like http(s)://HOST[:PORT][/PATH] (no spaces or quotes,
# which would break the tuple literal the trainer parses).
need_http_url() {
  [[ $2 =~ ^https?://[^/[:space:]\"\',]+(/[^[:space:]\"\',]*)?$ ]] ||
    die "$1 must be an http:// or https:// URL, got '$2'"
}

# read_urls_file FILE: sets the array rollout_urls from FILE, one URL a line (as sglang_mi300x.sh
# --urls-file writes them); blank lines and lines starting with # are skipped.
read_urls_file() {
  local file=$1 line number=0
  [[ -f $file ]] || die "--rollout-urls-file $file: no such file"
  rollout_urls=()
  # `read` with the default IFS trims spaces and tabs at both ends; `|| [[ -n $line ]]` keeps a
  # last line that has no newline.
  while read -r line || [[ -n $line ]]; do
    number=$((number + 1))
    line=${line%$'\r'}                      # a file written on Windows
    line=${line%"${line##*[![:space:]]}"}  # and the spaces before its \r
    [[ -z $line || $line == \#* ]] && continue
    need_http_url "--rollout-urls-file $file line $number:" "$line"
    rollout_urls+=("$line")
  done <"$file"
  ((${#rollout_urls[@]} > 0)) || die "--rollout-urls-file $file holds no URLs"
}

# urls_tuple URL...: the Python tuple literal config.rollout.urls takes: ("a","b"), or ("a",) for
# one URL (ml_collections evaluates the string as a literal).
urls_tuple() {
  local out="" url
  for url in "$@"; do out+="\"$url\","; done
  (($# > 1)) && out=${out%,}
  printf '(%s)' "$out"
}

# trainer_args: sets the array trainer_args, everything after `python` in the trainer's command,
# from config, workdir, rollout_urls, rollout_api_key_file, sandbox_url, sandbox_api_key_file and
# the pass-through flags in extra. distributed.mode=auto comes before the pass-through flags, so
# an explicit `-- --config.distributed.mode=...` wins (absl keeps the last value).
trainer_args() {
  trainer_args=(-m rstar_jax.main --config "$config" --workdir "$workdir" --config.distributed.mode=auto)
  if ((${#rollout_urls[@]} > 0)); then
    trainer_args+=(--config.rollout.backend=sglang "--config.rollout.urls=$(urls_tuple "${rollout_urls[@]}")")
  fi
  [[ -z $rollout_api_key_file ]] || trainer_args+=("--config.rollout.api_key_file=$rollout_api_key_file")
  [[ -z $sandbox_url ]] || trainer_args+=("--config.sandbox.url=$sandbox_url")
  [[ -z $sandbox_api_key_file ]] || trainer_args+=("--config.sandbox.api_key_file=$sandbox_api_key_file")
  trainer_args+=("${extra[@]}")
}
