#!/usr/bin/env bash
# One entry point that installs what is missing, then runs a task:
#   bash run.sh train [options]   the main job: `deno task train` on the embedded default cohort
#   bash run.sh test [args]       all tests: `deno task test` (args go to `deno test`)
#   bash run.sh setup             install only
# It needs Node.js/npm and, to install Debian packages, root (otherwise it lists what to install).
set -euo pipefail
cd "$(dirname "$0")"

DENO_VERSION=2.9.6
# Debian packages by purpose. Tests: nibabel (independent NIfTI check), Jupyter (notebooks),
# Chromium (figure rendering), dcm2niix (DICOM reference), Slurm and munge (a local cluster for
# deno task slurm). Training: oneDNN (native CPU kernels).
APT_TEST=(python3-nibabel jupyter-nbconvert python3-nbclient jupyter-client chromium dcm2niix slurm-wlm munge)
APT_TRAIN=(libdnnl2)

say() { echo "[run.sh] $*"; }

ensure_deno() {
  if command -v deno >/dev/null 2>&1 && deno --version | head -n1 | grep -q "^deno 2\.9\."; then
    return
  fi
  say "installing Deno ${DENO_VERSION} from the npm registry"
  if [ "$(id -u)" = 0 ]; then
    npm install -g --no-audit --no-fund "deno@${DENO_VERSION}" >/dev/null
  else
    npm install -g --prefix "$HOME/.local" --no-audit --no-fund "deno@${DENO_VERSION}" >/dev/null
    export PATH="$HOME/.local/bin:$PATH"
  fi
  deno --version | head -n1
}

ensure_node_modules() {
  # package-lock.json pins every npm package; install scripts are skipped (tfjs-node-gpu's would
  # download libtensorflow, see README "Backends").
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing npm packages (npm ci, pinned by package-lock.json)"
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  fi
}

ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "not root or no apt-get: please install ${missing[*]} (tests that need them are skipped)"
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_jupyter_kernel() {
  command -v jupyter >/dev/null 2>&1 || return 0
  if ! jupyter kernelspec list 2>/dev/null | grep -q "^\s*deno\s"; then
    say "registering the Deno Jupyter kernel"
    deno jupyter --install >/dev/null 2>&1 || say "deno jupyter --install failed (notebook tests will be skipped)"
  fi
}

task="${1:-}"
[ $# -gt 0 ] && shift
case "$task" in
  train)
    ensure_deno; ensure_node_modules; ensure_apt "${APT_TRAIN[@]}"
    exec deno task train "$@" ;;
  test)
    ensure_deno; ensure_node_modules; ensure_apt "${APT_TRAIN[@]}" "${APT_TEST[@]}"; ensure_jupyter_kernel
    exec deno task test "$@" ;;
  setup)
    ensure_deno; ensure_node_modules; ensure_apt "${APT_TRAIN[@]}" "${APT_TEST[@]}"; ensure_jupyter_kernel
    say "ready" ;;
  *)
    echo "usage: bash run.sh train [options] | bash run.sh test [deno test args] | bash run.sh setup" >&2
    exit 64 ;;
esac
