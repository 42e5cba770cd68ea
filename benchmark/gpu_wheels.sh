#!/bin/bash
# Fills .whl/ (or DIR) with what benchmark/gpu_session.sh installs on a lent GPU machine (Python 3.12, no internet):
# cp312 wheels of procgen-mirror and of what `import procgen` and tyro need beyond that machine's image, and in DIR/lib
# the shared libraries procgen's libenv.so links against from this machine (libGL, X11, glib, ...; gpu_session.sh
# uses only those the GPU machine lacks). 52 MiB (procgen's wheel is 45), of the 64 MiB a device call carries: a long
# run's checkpoint (~10.4 MiB) and eval.jsonl still fit, nothing much more.
# Usage, from the repo root, where pip reaches an index: bash benchmark/gpu_wheels.sh [DIR]
# Then name DIR in the device call's carry (.gitignore keeps .whl/ out of git).
set -euo pipefail
DIR=${1:-.whl}; PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "gpu_wheels.sh: no $PY; run make .venv/installed first (or set PY)" >&2; exit 1; }
mkdir -p "$DIR/lib"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
# versions as in requirements.txt where it pins them
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d "$DIR" procgen-mirror==0.10.7 gym3==0.3.3 gym-notices cffi pycparser tyro==1.0.16 docstring-parser shtab typeguard
$PY -m pip wheel -q --no-deps -w "$DIR" gym==0.26.2  # PyPI has gym 0.26.2 as source only: a pure-Python wheel
LIBENV=$($PY -c "import os, procgen; print(os.path.join(os.path.dirname(procgen.__file__), 'data/prebuilt/libenv.so'))" 2>/dev/null)
# the system libraries (procgen's wheel bundles the rest), without glibc's and the compiler runtime's, which every
# Linux has
ldd "$LIBENV" | awk '$3 ~ /^\// {print $3}' | grep -v "procgen_mirror.libs" |
  grep -v -E "/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so" | while read -r lib; do
  cp -L "$lib" "$DIR/lib/"
done
ls "$DIR"/*.whl | wc -l | xargs echo "wheels:"; echo "libraries: $(ls "$DIR/lib" | tr '\n' ' ')"; du -sh "$DIR"
