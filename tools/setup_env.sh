#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in ./.venv: Python 3.11, the torch /
# torchvision pair these machines carry, detectron2, and this package in editable mode.
#
# Idempotent: when nothing it depends on changed since the last successful run (a stamp
# in .venv records a hash of setup.py and this script) it returns in well under a second.
# Force a full pass with SEG_PLUGINS_FORCE_SETUP=1.
#
# detectron2 is installed in this order (the one used is printed and recorded):
#   (a) a detectron2 already importable in the venv is used as is;
#   (b) otherwise its official git source, cloned with a short timeout so that an offline
#       machine moves on within seconds, then built normally (with its C++/CUDA ops);
#   (c) otherwise the `pb1-detectron2==0.6` source distribution from PyPI, the detectron2
#       v0.6 sources. Its archive lacks detectron2/layers/csrc, so it is built without the
#       C++ extension; seg_plugins.compat supplies what the missing `detectron2._C` did.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEG_PLUGINS_VENV:-$ROOT/.venv}"
PY_VERSION=3.11
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
D2_GIT_URL="https://github.com/facebookresearch/detectron2.git"
D2_GIT_TIMEOUT="${SEG_PLUGINS_D2_GIT_TIMEOUT:-20}"
D2_SDIST="pb1-detectron2==0.6"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

stamp_value() {
  cat "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.seg_plugins_setup_stamp"
SOURCE_FILE="$VENV/.detectron2_source"

if [[ "${SEG_PLUGINS_FORCE_SETUP:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
  log "environment up to date ($VENV; detectron2 from: $(cat "$SOURCE_FILE" 2>/dev/null || echo unknown))"
  exit 0
fi

# --- 1. the virtualenv ---------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  PYTHON=""
  for cand in "python$PY_VERSION" python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" 2>/dev/null; then
      PYTHON="$cand"; break
    fi
  done
  [[ -n "$PYTHON" ]] || die "Python $PY_VERSION not found on PATH; install it (e.g. pyenv install 3.11) and re-run."
  log "creating virtualenv $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
VPY="$VENV/bin/python"

# --- 2. torch / torchvision (exact pair; nothing later may replace them) ------------------
if ! "$VPY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')))" 2>/dev/null; then
  log "installing $TORCH_PIN $TORCHVISION_PIN"
  "${PIP[@]}" install -q "$TORCH_PIN" "$TORCHVISION_PIN"
fi
# Every later pip call gets this constraint so no dependency can pull another torch.
CONSTRAINTS="$VENV/.torch_constraints.txt"
printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" > "$CONSTRAINTS"

# --- 3. detectron2 ------------------------------------------------------------------------
d2_importable() { (cd / && "$VPY" -c "import detectron2" >/dev/null 2>&1); }

install_d2_runtime_deps() {
  # detectron2 v0.6's own install_requires, minus the pins that no longer install or
  # import on this stack (black==21.4b2, caffe2's `future`/`pydot`), with ranges that work.
  "${PIP[@]}" install -q -c "$CONSTRAINTS" \
    "Pillow>=9.0" "matplotlib>=3.5" "pycocotools>=2.0.6" "termcolor>=1.1" "yacs>=0.1.8" \
    "tabulate>=0.8" "cloudpickle>=2.0" "tqdm>4.29" "tensorboard>=2.10" \
    "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.11" "omegaconf>=2.1" "hydra-core>=1.1"
}

D2_SOURCE=""
if d2_importable; then
  D2_SOURCE="(a) already installed: $(cd / && "$VPY" -c 'import detectron2, os; print(detectron2.__version__, os.path.dirname(detectron2.__file__))')"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  log "detectron2 not installed; trying its official git source (timeout ${D2_GIT_TIMEOUT}s)"
  if GIT_TERMINAL_PROMPT=0 timeout "$D2_GIT_TIMEOUT" \
       git clone -q --depth 1 "$D2_GIT_URL" "$WORK/detectron2" 2>"$WORK/git.err"; then
    log "building detectron2 from git source (with its C++ ops; this takes a while)"
    "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation "$WORK/detectron2"
    D2_SOURCE="(b) official git source ($D2_GIT_URL @ $(git -C "$WORK/detectron2" rev-parse --short HEAD))"
  else
    log "git source unreachable: $(tail -n 1 "$WORK/git.err" 2>/dev/null || echo timeout)"
    log "falling back to the $D2_SDIST source distribution (built without its C++ extension)"
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: \
      -c "$CONSTRAINTS" -d "$WORK" "$D2_SDIST"
    tar -xzf "$WORK"/pb1-detectron2-0.6.tar.gz -C "$WORK"
    SRC="$WORK/pb1-detectron2-0.6"
    # The archive has no detectron2/layers/csrc, so the extension cannot be built; every
    # other file is the v0.6 release. Drop the extension and install the Python sources.
    grep -q "ext_modules=get_extensions()," "$SRC/setup.py" \
      || die "unexpected $D2_SDIST setup.py (no ext_modules line); cannot patch it"
    sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$SRC/setup.py"
    # Its setup.py packages the model-zoo configs from a top-level configs/ folder, which the
    # archive keeps only under detectron2/model_zoo/configs: put them where it looks.
    [[ -d "$SRC/configs" ]] || cp -r "$SRC/detectron2/model_zoo/configs" "$SRC/configs"
    "${PIP[@]}" install -q --no-deps --no-build-isolation "$SRC"
    D2_SOURCE="(c) $D2_SDIST source distribution, without C++ ops (seg_plugins.compat repairs it)"
  fi
fi
install_d2_runtime_deps
d2_importable || die "detectron2 was installed but does not import; see the messages above."
printf '%s\n' "$D2_SOURCE" > "$SOURCE_FILE"
log "detectron2 from: $D2_SOURCE"

# --- 4. this package, editable, with its test extras --------------------------------------
log "installing seg_plugins (editable) and its dependencies"
"${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation -e "$ROOT[test]"

"$VPY" -W ignore::FutureWarning -c "import seg_plugins, detectron2.modeling, detectron2.data, detectron2.evaluation" \
  || die "the environment was built but 'import seg_plugins' fails; see the traceback above."
stamp_value > "$STAMP"
log "environment ready: $VENV"
