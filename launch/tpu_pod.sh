#!/usr/bin/env bash
# Trains a config on a Cloud TPU VM pod slice: create the slice, copy and install this checkout on
# every worker, start the run on all workers at once, follow worker 0's log, delete the slice.
#
#   bash launch/tpu_pod.sh ACTION [--flags] [-- --config.KEY=VALUE ...]
#
# ACTION: create | install | run | logs | delete | up (= create, install, run) | all (= up, then
# logs until the run ends, then delete). Flags (defaults in brackets):
#   --project P              GCP project [gcloud's configured project]
#   --zone Z                 e.g. us-west4-a [required]
#   --accelerator-type T     e.g. v5litepod-16, v4-32, v5p-64 [v5litepod-16]
#   --runtime-version V      TPU VM image [v2-alpha-tpuv5-lite for v5e, tpu-ubuntu2204-base else]
#   --name N                 slice name [gan-jax]
#   --workdir gs://B/D       checkpoints, logs, samples (every worker writes the same bucket)
#   --config C               experiment config [experiments/ffhq.py]
#   --spot                   create a Spot slice (preemptible; re-run 'up' to resume the run)
#   --dry-run                print the commands instead of running them (also DRY_RUN=1)
# Arguments after -- go to python -m gan_jax.main on every worker. Check first that the config fits
# the slice, on any machine: python -m gan_jax.aot --config C --topology v5e-16 (README).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || usage 2
action="$1"
shift
case "$action" in
  create|install|run|logs|delete|up|all) ;;
  -h|--help) usage 0 ;;
  *) die "unknown action '$action' (create, install, run, logs, delete, up, all)" ;;
esac

project=""
zone=""
accelerator="v5litepod-16"
runtime=""
name="gan-jax"
workdir=""
config="experiments/ffhq.py"
spot=0
dry_run="${DRY_RUN:-0}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --accelerator-type) accelerator="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --runtime-version) runtime="${2:?--runtime-version needs a value}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --workdir) workdir="${2:?--workdir needs a value}"; shift 2 ;;
    --config) config="${2:?--config needs a value}"; shift 2 ;;
    --spot) spot=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown flag '$1' (see bash launch/tpu_pod.sh --help)" ;;
  esac
done
[ -n "$zone" ] || die "--zone is required, e.g. --zone us-west4-a"
if [ -z "$runtime" ]; then
  case "$accelerator" in
    v5litepod-*|v5e-*) runtime="v2-alpha-tpuv5-lite" ;;
    v6e-*) runtime="v2-alpha-tpuv6e" ;;
    v5p-*) runtime="v2-alpha-tpuv5" ;;
    *) runtime="tpu-ubuntu2204-base" ;;
  esac
fi
case "$action" in
  run|up|all)
    case "$workdir" in
      gs://*) ;;
      "") die "--workdir gs://BUCKET/DIR is required: every worker must see the same checkpoints" ;;
      *) die "--workdir '$workdir' must be a gs:// path that every worker can reach" ;;
    esac
    [ -f "${config%%:*}" ] || die "--config: no file '${config%%:*}' in this checkout" ;;
esac

gcloud_flags=(--zone="$zone")
[ -z "$project" ] || gcloud_flags+=(--project="$project")
remote_dir='gan_jax'  # relative to each worker's home directory
log_file='gan_jax_run.log'
pid_file='gan_jax_run.pid'

# Prints the command, shell-quoted; runs it unless this is a dry run.
run_cmd() {
  local arg line='+'
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      line+=" $arg"
    else
      line+=" ${arg@Q}"
    fi
  done
  printf '%s\n' "$line"
  if [ "$dry_run" != 1 ]; then
    "$@"
  fi
}

tpu_ssh() {  # tpu_ssh WORKER COMMAND
  run_cmd gcloud compute tpus tpu-vm ssh "$name" "${gcloud_flags[@]}" --worker="$1" \
    --command="$2"
}

do_create() {
  local spot_flag=()
  [ "$spot" != 1 ] || spot_flag=(--spot)
  run_cmd gcloud compute tpus tpu-vm create "$name" "${gcloud_flags[@]}" \
    --accelerator-type="$accelerator" --version="$runtime" "${spot_flag[@]}"
}

do_install() {
  # The committed tree (git archive): what runs on the pod is what git records here.
  local tarball
  tarball="$(mktemp -u /tmp/gan_jax_src.XXXXXX).tar.gz"
  run_cmd git archive --format=tar.gz --output="$tarball" HEAD
  run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$name:gan_jax_src.tar.gz" \
    "${gcloud_flags[@]}" --worker=all
  tpu_ssh all "rm -rf $remote_dir && mkdir -p $remote_dir && tar xzf gan_jax_src.tar.gz \
-C $remote_dir && cd $remote_dir && python3 -m pip install --quiet -e '.[tpu]'"
  if [ "$dry_run" != 1 ]; then
    rm -f "$tarball"
  fi
}

do_run() {
  local args=(python3 -m gan_jax.main --config="$config" --workdir="$workdir" --distributed
    "${extra[@]}")
  local quoted
  quoted="$(printf ' %q' "${args[@]}")"
  # Every worker starts the same command; jax.distributed.initialize() finds its peers on Cloud
  # TPU. nohup: the run survives the ssh session; the log stays on each worker.
  tpu_ssh all "cd $remote_dir && (nohup${quoted} > ~/$log_file 2>&1 < /dev/null & \
echo \$! > ~/$pid_file)"
}

do_logs() {
  # Worker 0's log (process 0 logs the run); tail ends when that worker's training process exits.
  tpu_ssh 0 "tail -n 200 --pid=\$(cat ~/$pid_file) -f ~/$log_file"
}

do_delete() {
  run_cmd gcloud compute tpus tpu-vm delete "$name" "${gcloud_flags[@]}" --quiet
}

case "$action" in
  create) do_create ;;
  install) do_install ;;
  run) do_run ;;
  logs) do_logs ;;
  delete) do_delete ;;
  up) do_create; do_install; do_run ;;
  all) do_create; do_install; do_run; do_logs; do_delete ;;
esac
