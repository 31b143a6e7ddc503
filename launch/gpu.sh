#!/usr/bin/env bash
# Runs ran_jax training on this host, using all of its GPUs.
set -euo pipefail

PROG="$(basename "$0")"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<EOF
Usage: $PROG [-h] [CONFIG WORKDIR] [--] [EXTRA_ARGS...]

Runs, in the foreground, on all GPUs of this host:

  python3 -m ran_jax.main --config=CONFIG --workdir=WORKDIR EXTRA_ARGS...

Arguments (positional, or from the environment variable of the same name):
  CONFIG     config file, e.g. configs/imagenet_attention56.py (relative to the current
             directory or to the repository root)
  WORKDIR    directory for checkpoints and summaries (local or gs://)
  EXTRA_ARGS passed through to ran_jax.main, e.g. --config.batch_size=256
             (put '--' before them when CONFIG and WORKDIR come from the environment)

Environment:
  XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX preallocates
                                  (default here: .9)
  CUDA_VISIBLE_DEVICES            restricts the GPUs used (default: all)
  PYTHON                          interpreter (default: python3)
  DRY_RUN=1                       print the command instead of running it

Example:
  $PROG configs/imagenet_attention56.py /tmp/ran/a56 --config.data_dir=/data/tensorflow_datasets
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  echo "Run '$PROG -h' for usage." >&2
  exit 2
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi

CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
for var in CONFIG WORKDIR; do
  if [[ $# -gt 0 && "$1" != -* ]]; then
    printf -v "$var" '%s' "$1"
    shift
  fi
done
if [[ "${1:-}" == -- ]]; then
  shift
fi

[[ -n "$CONFIG" ]] || die "missing CONFIG (argument 1); give it as an argument or environment variable"
[[ -n "$WORKDIR" ]] || die "missing WORKDIR (argument 2); give it as an argument or environment variable"

# A config may carry a ':suffix' argument (ml_collections config_flags); check only the file.
config_file="${CONFIG%%:*}"
config_arg="${CONFIG:${#config_file}}"
if [[ -f "$config_file" ]]; then
  config_file="$(cd "$(dirname "$config_file")" && pwd)/$(basename "$config_file")"
elif [[ "$config_file" != /* && -f "$REPO_ROOT/$config_file" ]]; then
  config_file="$REPO_ROOT/$config_file"
else
  die "config file '$config_file' not found (relative to $PWD or $REPO_ROOT)"
fi

export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-.9}"
cmd=("${PYTHON:-python3}" -m ran_jax.main "--config=$config_file$config_arg" "--workdir=$WORKDIR" "$@")

cd "$REPO_ROOT"
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '+ XLA_PYTHON_CLIENT_MEM_FRACTION=%q' "$XLA_PYTHON_CLIENT_MEM_FRACTION"
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
