#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in ./.venv: Python 3.11, the torch /
# torchvision pair these machines carry, detectron2, and this package in editable mode.
#
# Idempotent: when nothing it depends on changed since the last successful run (a stamp
# in .venv records a hash of setup.py and this script) it returns in well under a second.
# Force a full pass with SEG_PLUGINS_FORCE_SETUP=1.
#
# detectron2 is installed in this order (the one used is printed and recorded):
#   (a) a detectron2 already importable in the venv is used as is, unchanged;
#   (b) otherwise SEG_PLUGINS_D2_SOURCE=PATH, a detectron2 source checkout or a .tar.gz of
#       one (e.g. official main): copied to a temporary folder (the user's tree is not
#       touched) and built with its C++ extension -- CPU ops, and CUDA ops too where nvcc
#       and a CUDA-enabled torch are present -- then installed into the venv;
#   (c) otherwise its official git source, cloned with a short timeout so that an offline
#       machine moves on within seconds, then built the same way;
#   (d) otherwise the `pb1-detectron2==0.6` source distribution from PyPI, the detectron2
#       v0.6 sources. Its archive lacks detectron2/layers/csrc, so it is built without the
#       C++ extension; seg_plugins.compat supplies what the missing `detectron2._C` did.
# To develop detectron2 itself in place, `pip install -e` your clone into the venv first:
# (a) then keeps it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEG_PLUGINS_VENV:-$ROOT/.venv}"
PY_VERSION=3.11
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
PYDENSECRF_PIN="pydensecrf2==1.1"  # the optional CRF backend (extra "crf"); tests use it
# panopticapi's pq_compute, the reference the PQ evaluator is tested against: the copy in
# panopticapi-lite, installed without its dependencies (its metadata pins numpy < 2; the two
# modules used need only numpy and Pillow).
PANOPTICAPI_PIN="panopticapi-lite==0.2.0"
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

# SEG_PLUGINS_D2_SOURCE is checked before anything is built, so that a wrong path fails in
# a second, not after the torch install.
if [[ -n "${SEG_PLUGINS_D2_SOURCE:-}" ]]; then
  given="$SEG_PLUGINS_D2_SOURCE"
  hint="give a detectron2 checkout (setup.py + detectron2/layers/csrc) or a .tar.gz of one"
  if [[ -d "$given" ]]; then
    [[ -f "$given/setup.py" && -d "$given/detectron2/layers/csrc" ]] \
      || die "SEG_PLUGINS_D2_SOURCE=$given is a folder without setup.py and detectron2/layers/csrc; $hint"
  elif [[ -f "$given" ]]; then
    listing="$(tar -tzf "$given" 2>/dev/null)" \
      || die "SEG_PLUGINS_D2_SOURCE=$given is not a readable .tar.gz; $hint"
    grep -qE '^(\./)?([^/]+/)?detectron2/layers/csrc/' <<<"$listing" \
      || die "SEG_PLUGINS_D2_SOURCE=$given holds no detectron2/layers/csrc (the C++ sources); $hint"
  else
    die "SEG_PLUGINS_D2_SOURCE=$given does not exist; $hint"
  fi
  SEG_PLUGINS_D2_SOURCE="$(cd "$(dirname "$given")" && pwd)/$(basename "$given")"
fi

if [[ "${SEG_PLUGINS_FORCE_SETUP:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
  log "environment up to date ($VENV; detectron2 from: $(cat "$SOURCE_FILE" 2>/dev/null || echo unknown))"
  [[ -z "${SEG_PLUGINS_D2_SOURCE:-}" ]] || grep -qF "$SEG_PLUGINS_D2_SOURCE" "$SOURCE_FILE" 2>/dev/null \
    || log "SEG_PLUGINS_D2_SOURCE is set, but this venv keeps the detectron2 it has; to build the given source instead: $VENV/bin/pip uninstall -y detectron2 pb1-detectron2, then SEG_PLUGINS_FORCE_SETUP=1"
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

build_d2_from_source() {
  # $1: a detectron2 source tree (setup.py + detectron2/layers/csrc), writable, ours to change.
  local src="$1"
  [[ -f "$src/setup.py" && -d "$src/detectron2/layers/csrc" ]] \
    || die "$src is not a detectron2 source tree (expected setup.py and detectron2/layers/csrc)"
  # torch's BuildExtension compiles the sources in parallel with ninja (MAX_JOBS jobs);
  # without ninja it compiles them one at a time.
  "${PIP[@]}" install -q -c "$CONSTRAINTS" ninja
  local kind="CPU ops"
  if command -v nvcc >/dev/null 2>&1 && "$VPY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    kind="CPU + CUDA ops (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
  fi
  log "building detectron2 $(sed -n 's/^__version__ = .\(.*\).$/\1/p' "$src/detectron2/__init__.py") from $src with its C++ extension ($kind; about 2 min on 2 cores)"
  (cd "$src" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" PATH="$VENV/bin:$PATH" \
     "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation .) \
    || die "building detectron2 from $src failed; see the compiler messages above"
  D2_KIND="$kind"
}

D2_SOURCE=""
D2_KIND=""
PREVIOUS_SOURCE="$(cat "$SOURCE_FILE" 2>/dev/null || true)"
if d2_importable; then
  if [[ "$PREVIOUS_SOURCE" == "("[bcd]")"* ]]; then
    D2_SOURCE="$PREVIOUS_SOURCE"  # installed by an earlier run of this script: keep its record
  else
    D2_SOURCE="(a) already installed: $(cd / && "$VPY" -c 'import detectron2, os; print(detectron2.__version__, os.path.dirname(detectron2.__file__))')"
  fi
  [[ -z "${SEG_PLUGINS_D2_SOURCE:-}" ]] || log "SEG_PLUGINS_D2_SOURCE is set, but the venv has a detectron2 already, which is kept; to build the given source instead: $VENV/bin/pip uninstall -y detectron2 pb1-detectron2, then run this again"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  if [[ -n "${SEG_PLUGINS_D2_SOURCE:-}" ]]; then
    given="$SEG_PLUGINS_D2_SOURCE"  # checked and made absolute above
    mkdir -p "$WORK/src"
    if [[ -d "$given" ]]; then
      # a copy without .git and earlier build outputs: the user's tree stays as it is
      tar -C "$given" --exclude=.git --exclude=build --exclude='*.so' -cf - . | tar -C "$WORK/src" -xf -
      SRC="$WORK/src"
    else
      tar -xzf "$given" -C "$WORK/src"
      # the archive holds the tree itself or one top-level folder with it
      SRC="$(dirname "$(find "$WORK/src" -maxdepth 2 -name setup.py | head -n 1)")"
    fi
    build_d2_from_source "$SRC"
    D2_SOURCE="(b) SEG_PLUGINS_D2_SOURCE=$given, built with $D2_KIND"
  else
    log "detectron2 not installed; trying its official git source (timeout ${D2_GIT_TIMEOUT}s)"
    if GIT_TERMINAL_PROMPT=0 timeout "$D2_GIT_TIMEOUT" \
         git clone -q --depth 1 "$D2_GIT_URL" "$WORK/detectron2" 2>"$WORK/git.err"; then
      build_d2_from_source "$WORK/detectron2"
      D2_SOURCE="(c) official git source ($D2_GIT_URL @ $(git -C "$WORK/detectron2" rev-parse --short HEAD)), built with $D2_KIND"
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
      D2_SOURCE="(d) $D2_SDIST source distribution, without C++ ops (seg_plugins.compat repairs it)"
    fi
  fi
fi
install_d2_runtime_deps
d2_importable || die "detectron2 was installed but does not import; see the messages above."
printf '%s\n' "$D2_SOURCE" > "$SOURCE_FILE"
log "detectron2 from: $D2_SOURCE"

# --- 4. this package, editable, with its test extras --------------------------------------
log "installing seg_plugins (editable) and its dependencies"
"${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation -e "$ROOT[test]"
# The optional CRF backend (setup.py's "crf" extra), so that its tests run here too: no wheel
# exists for this platform, pip builds it (Cython fetched into an isolated build, g++; ~30 s).
log "building pydensecrf2 (the optional dense CRF backend, MODEL.CRF.BACKEND pydensecrf2)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "$PYDENSECRF_PIN" \
  || die "could not build $PYDENSECRF_PIN (needs a C++ compiler); the tests of the optional CRF backend need it"
log "installing $PANOPTICAPI_PIN without its dependencies (the tests' PQ reference)"
"${PIP[@]}" install -q --no-deps "$PANOPTICAPI_PIN"

"$VPY" -W ignore::FutureWarning -c "import seg_plugins, detectron2.modeling, detectron2.data, detectron2.evaluation" \
  || die "the environment was built but 'import seg_plugins' fails; see the traceback above."
stamp_value > "$STAMP"
log "environment ready: $VENV"
