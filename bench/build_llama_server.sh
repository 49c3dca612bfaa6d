#!/usr/bin/env bash
# Build llama.cpp's own server (llama-server) from the llama.cpp that the installed
# llama-cpp-python vendors, so bench/llamacpp_server.py compares castillo with the server
# built from the very same kernels. Output: .cache/bench/llama-server (not committed).
# Needs cmake and a C++ compiler; about 10-15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
VERSION=$($PY -c "import llama_cpp; print(llama_cpp.__version__)")
WORK=.cache/bench/llama-server-src
OUT=.cache/bench/llama-server
mkdir -p "$WORK"
if [ ! -d "$WORK/llama_cpp_python-$VERSION" ]; then
  $PY -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" -q
  tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >/dev/null
cmake --build "$SRC/build" --target llama-server -j "$(nproc)"
cp "$SRC/build/bin/llama-server" "$OUT"
echo "built $OUT (llama.cpp vendored by llama-cpp-python $VERSION)"
