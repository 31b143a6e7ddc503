#!/usr/bin/env bash
# Launches ran_jax training on every worker of an existing Cloud TPU VM (one host or a pod slice).
set -euo pipefail

PROG="$(basename "$0")"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<EOF
Usage: $PROG [-h] [TPU_NAME ZONE CONFIG WORKDIR] [--] [EXTRA_ARGS...]

Copies this repository to every worker of a Cloud TPU VM, installs it there and
starts the same training command on all workers at once, in the background:

  python3 -m ran_jax.main --config=CONFIG --workdir=WORKDIR --distributed EXTRA_ARGS...

Arguments (positional, or from the environment variable of the same name):
  TPU_NAME   name of an existing TPU VM
  ZONE       its zone, e.g. us-central2-b
  CONFIG     config file relative to the repository root, e.g. configs/imagenet_attention56.py
  WORKDIR    checkpoints and summaries; all workers must share it, so use a bucket
             path such as gs://my-bucket/ran/attention56
  EXTRA_ARGS passed through to ran_jax.main, e.g. --config.data_dir=gs://my-bucket/tensorflow_datasets
             (put '--' before them when the four arguments come from the environment)

Optional environment variables:
  PROJECT       Google Cloud project (default: gcloud's configured project)
  REPO_URL      git clone this URL on the workers instead of copying the local tree
  REPO_REF      branch, tag or commit to check out from REPO_URL (default: HEAD)
  REMOTE_DIR    checkout directory on each worker, relative to home (default: ran_jax)
  LOG_DIR       log directory on each worker, relative to home (default: ran_jax_logs)
  PIP_EXTRA     requirement installed with the package (default: 'jax[tpu]'; empty skips it)
  PYTHON        interpreter on the workers (default: python3)
  SKIP_SYNC=1   keep the code already on the workers
  SKIP_INSTALL=1 skip 'pip install'
  DRY_RUN=1     print the gcloud commands instead of running them

This script neither creates nor deletes TPUs. Example of creating one first:
  gcloud compute tpus tpu-vm create my-tpu --zone=us-central2-b \\
    --accelerator-type=v4-32 --version=tpu-ubuntu2204-base

Example:
  $PROG my-tpu us-central2-b configs/imagenet_attention56.py gs://my-bucket/ran/a56 \\
    --config.data_dir=gs://my-bucket/tensorflow_datasets

Follow worker 0's log, then stop the run on all workers:
  gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=0 \\
    --command='tail -f ~/ran_jax_logs/latest.log'
  gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all \\
    --command='kill \$(cat ~/ran_jax_logs/train.pid)'
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  echo "Run '$PROG -h' for usage." >&2
  exit 2
}

run() {
  if [[ -z "${DRY_RUN:-}" ]]; then
    "$@"
    return
  fi
  local arg body=""
  printf '+'
  for arg in "$@"; do
    if [[ "$arg" == --command=* ]]; then
      body="${arg#--command=}"
      printf ' --command=<script below>'
    else
      printf ' %q' "$arg"
    fi
  done
  printf '\n'
  [[ -z "$body" ]] || printf '%s\n' "$body" | sed 's/^/    | /'
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi

TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
CONFIG="${CONFIG:-}"
WORKDIR="${WORKDIR:-}"
for var in TPU_NAME ZONE CONFIG WORKDIR; do
  if [[ $# -gt 0 && "$1" != -* ]]; then
    printf -v "$var" '%s' "$1"
    shift
  fi
done
if [[ "${1:-}" == -- ]]; then
  shift
fi
EXTRA_ARGS=("$@")

PROJECT="${PROJECT:-}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-HEAD}"
REMOTE_DIR="${REMOTE_DIR:-ran_jax}"
LOG_DIR="${LOG_DIR:-ran_jax_logs}"
PIP_EXTRA="${PIP_EXTRA-jax[tpu]}"
PYTHON="${PYTHON:-python3}"

missing=()
[[ -n "$TPU_NAME" ]] || missing+=("TPU_NAME (argument 1)")
[[ -n "$ZONE" ]] || missing+=("ZONE (argument 2)")
[[ -n "$CONFIG" ]] || missing+=("CONFIG (argument 3)")
[[ -n "$WORKDIR" ]] || missing+=("WORKDIR (argument 4)")
if [[ ${#missing[@]} -gt 0 ]]; then
  joined="$(printf '%s, ' "${missing[@]}")"
  die "missing ${joined%, }; give them as arguments or environment variables"
fi

[[ "$TPU_NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "invalid TPU name '$TPU_NAME' (lowercase letters, digits and '-', starting with a letter)"
[[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "invalid zone '$ZONE' (expected e.g. us-central2-b)"

config_file="${CONFIG%%:*}"
[[ "$config_file" != /* ]] || die "CONFIG must be relative to the repository root, e.g. configs/imagenet_attention56.py (got '$CONFIG')"
[[ "$config_file" == *.py ]] || die "CONFIG must be a Python config file (got '$CONFIG')"
if [[ -z "$REPO_URL" && ! -f "$REPO_ROOT/$config_file" ]]; then
  die "config file '$config_file' not found in $REPO_ROOT"
fi

for var in REMOTE_DIR LOG_DIR; do
  value="${!var}"
  if [[ ! "$value" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$ ]]; then
    die "$var must be a plain path below the home directory, without '.' or '..' parts (got '$value')"
  fi
done

if [[ "$WORKDIR" != gs://* ]]; then
  echo "$PROG: warning: WORKDIR '$WORKDIR' is not a gs:// path; on a multi-host TPU every" \
    "worker then writes to its own disk and checkpoints will be incomplete." >&2
fi

if [[ -z "${DRY_RUN:-}" ]] && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud not found; install the Google Cloud CLI (https://cloud.google.com/sdk)"
fi

gcloud_flags=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || gcloud_flags+=("--project=$PROJECT")

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_flags[@]}" --worker=all --command="$1"
}

# Shell variables shared by the commands that run on the workers.
remote_vars="$(printf 'dir="$HOME"/%q; log_dir="$HOME"/%q; pid_file="$log_dir/train.pid"; ' \
  "$REMOTE_DIR" "$LOG_DIR")"

echo "== Checking that no training is running on $TPU_NAME"
on_all_workers "$remote_vars"'
if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "$(hostname): training already running (pid $(cat "$pid_file")); stop it first" >&2
  exit 1
fi'

if [[ -z "${SKIP_SYNC:-}" ]]; then
  if [[ -n "$REPO_URL" ]]; then
    echo "== Cloning $REPO_URL ($REPO_REF) on all workers"
    on_all_workers "$remote_vars$(printf 'url=%q; ref=%q; ' "$REPO_URL" "$REPO_REF")"'
set -e
if [ ! -d "$dir/.git" ]; then rm -rf "$dir"; git clone --quiet "$url" "$dir"; fi
git -C "$dir" remote set-url origin "$url"
git -C "$dir" fetch --quiet origin "$ref"
git -C "$dir" checkout --quiet --force FETCH_HEAD'
  else
    echo "== Copying $REPO_ROOT to all workers"
    tmp_dir="$(mktemp -d)"
    trap 'rm -rf "$tmp_dir"' EXIT
    tarball="$tmp_dir/ran_jax_src.tar.gz"
    if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      # Tracked and untracked files, minus ignored ones and deletions.
      git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' path; do
            if [[ -e "$REPO_ROOT/$path" ]]; then printf '%s\0' "$path"; fi
          done \
        | tar -C "$REPO_ROOT" --null -T - -czf "$tarball"
    else
      tar -C "$REPO_ROOT" --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' \
        --exclude=.pytest_cache -czf "$tarball" .
    fi
    run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:ran_jax_src.tar.gz" \
      "${gcloud_flags[@]}" --worker=all
    on_all_workers "$remote_vars"'
set -e
rm -rf "$dir.new"
mkdir -p "$dir.new"
tar -xzf "$HOME/ran_jax_src.tar.gz" -C "$dir.new"
rm -rf "$dir" "$HOME/ran_jax_src.tar.gz"
mv "$dir.new" "$dir"'
  fi
fi

if [[ -z "${SKIP_INSTALL:-}" ]]; then
  echo "== Installing on all workers"
  pip_args=(-m pip install --quiet -e .)
  [[ -z "$PIP_EXTRA" ]] || pip_args+=("$PIP_EXTRA")
  on_all_workers "$remote_vars"'cd "$dir" && '"$(printf '%q ' "$PYTHON" "${pip_args[@]}")"
fi

echo "== Starting training on all workers"
train_cmd=("$PYTHON" -m ran_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" --distributed)
train_cmd+=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
run_id="$(date -u +%Y%m%d-%H%M%S)"
on_all_workers "$remote_vars$(printf 'log="$log_dir"/train-%q.log; ' "$run_id")"'
set -e
mkdir -p "$log_dir"
cd "$dir"
setsid nohup '"$(printf '%q ' "${train_cmd[@]}")"'> "$log" 2>&1 < /dev/null &
echo $! > "$pid_file"
ln -sfn "$log" "$log_dir/latest.log"
echo "$(hostname): started pid $! -> $log"'

project_flag=""
[[ -z "$PROJECT" ]] || project_flag=" --project=$PROJECT"
[[ -z "${DRY_RUN:-}" ]] || echo $'\nDry run: nothing was executed.'
cat <<EOF

Run $run_id on all workers of $TPU_NAME.
Follow worker 0's log:
  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE$project_flag --worker=0 --command='tail -f ~/$LOG_DIR/latest.log'
Stop the run on all workers:
  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE$project_flag --worker=all --command='kill \$(cat ~/$LOG_DIR/train.pid)'
EOF
