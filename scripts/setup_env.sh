#!/usr/bin/env bash
# Create .venv and install everything condseg needs. Safe to run again: every step
# checks before it acts. Called by `make setup`; usable on its own.
#
#   PYTHON       interpreter that creates the venv        (default: python3)
#   VENV         where the venv lives                     (default: .venv)
#   VENV_FLAGS   extra `python -m venv` flags, e.g. --system-site-packages to reuse
#                a detectron2 you built from source with its CUDA ops
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
VENV_FLAGS=${VENV_FLAGS:-}

# detectron2 is not published on PyPI by its authors; this package carries its
# Python sources (upstream commit a59f0563) and is verified by hash before use.
D2_PKG="sal-detectron2==0.7.2"
D2_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv $VENV_FLAGS "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "condseg needs Python >= 3.10"'

say "installing pinned requirements (torch/torchvision are large the first time)"
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt

if "$PY" -c 'import detectron2' 2>/dev/null; then
  say "detectron2 already importable: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
else
  say "installing detectron2's Python sources from $D2_PKG (hash-verified)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.10 -d "$tmp/wheel" "$D2_PKG"
  whl=$(ls "$tmp"/wheel/*.whl)
  got=$("$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$whl")
  if [ "$got" != "$D2_SHA256" ]; then
    echo "error: $whl has sha256 $got, expected $D2_SHA256; refusing to install it" >&2
    exit 1
  fi
  dest="$VENV/detectron2-src"
  rm -rf "$dest" && mkdir -p "$dest"
  "$PY" -m zipfile -e "$whl" "$tmp/unpacked"
  cp -r "$tmp/unpacked/detectron2" "$dest/"
  # Its compiled ops target Python 3.10 and cannot load here; detectron2 imports
  # them lazily and condseg never calls them.
  find "$dest/detectron2" -name '_C*.so' -delete
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$dest" && pwd)" > "$site/detectron2-src.pth"
  "$PY" -c 'import detectron2; print("detectron2", detectron2.__version__)'
fi

say "installing condseg (editable)"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$PY" -c 'import condseg, torch, torchvision, detectron2; print(f"condseg ready: torch {torch.__version__}, torchvision {torchvision.__version__}, detectron2 {detectron2.__version__}")'
