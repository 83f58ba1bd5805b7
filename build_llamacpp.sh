#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (and its RPC worker, `ggml-rpc-server`) and cache
# them outside the checkout.
#
# The source is llama.cpp as carried inside a pinned PyPI source distribution
# (llama-cpp-python's sdist ships it under vendor/llama.cpp), or any llama.cpp
# checkout given with --source (Microsoft's BitNet fork included).
#
# Progress goes to standard error; the absolute path of the built llama-server
# is the last line of standard output.
set -euo pipefail

# --- pinned source ---------------------------------------------------------
SDIST_NAME="llama-cpp-python"
SDIST_VERSION="0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

usage() {
  cat <<EOF
Usage: $(basename "$0") [options]

Builds llama-server and prints its absolute path as the last line of stdout.
llama.cpp's RPC worker (ggml-rpc-server) is built into the same bin/ directory.

Options:
  --backend cpu|cuda|metal   GPU backend (default: metal on Apple Silicon, else cpu)
  --source DIR               build this llama.cpp checkout instead of the pinned
                             ${SDIST_NAME}==${SDIST_VERSION} source distribution
  --cmake-flag FLAG          extra CMake flag, repeatable (e.g. -DGGML_AVX512=OFF)
  --jobs N                   parallel compile jobs (default: number of cores)
  --cache-dir DIR            where sources and builds are cached
                             (default: \$LLAMA_SUPERVISOR_CACHE or ~/.cache/llama-supervisor)
  --amx                      keep ggml's AMX kernels on x86-64 (left out by default: they
                             crash where the OS does not grant AMX state, e.g. some VMs)
  --rpc                      build llama.cpp's RPC backend and worker (the default; kept
                             as a flag for scripts that ask for it)
  --no-rpc                   leave the RPC backend and worker out
  --force                    rebuild even when a cached build exists
  --print-key                print the cache key and exit
  -h, --help                 show this help
EOF
}

log() { printf '[build_llamacpp] %s\n' "$*" >&2; }
die() { printf '[build_llamacpp] error: %s\n' "$*" >&2; exit 2; }

default_backend() {
  if [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" = "arm64" ]; then echo metal; else echo cpu; fi
}

nproc_portable() {
  getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

sha256_stdin() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
  else shasum -a 256 | cut -d' ' -f1; fi
}

BACKEND=""
SOURCE_DIR=""
EXTRA_FLAGS=()
JOBS="$(nproc_portable)"
CACHE_DIR="${LLAMA_SUPERVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-supervisor}"
FORCE=0
PRINT_KEY=0
KEEP_AMX=0
WITH_RPC=1

while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="${2:?--backend needs a value}"; shift 2 ;;
    --source) SOURCE_DIR="${2:?--source needs a directory}"; shift 2 ;;
    --cmake-flag) EXTRA_FLAGS+=("${2:?--cmake-flag needs a value}"); shift 2 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --cache-dir) CACHE_DIR="${2:?--cache-dir needs a directory}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --amx) KEEP_AMX=1; shift ;;
    --rpc) WITH_RPC=1; shift ;;
    --no-rpc) WITH_RPC=0; shift ;;
    --print-key) PRINT_KEY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

BACKEND="${BACKEND:-$(default_backend)}"
case "$BACKEND" in
  cpu|cuda|metal) ;;
  *) die "unknown backend '$BACKEND' (expected cpu, cuda or metal)" ;;
esac

# --- prerequisites -----------------------------------------------------------
check_tools() {
  command -v cmake >/dev/null 2>&1 \
    || die "cmake not found. Install it (Debian/Ubuntu: apt-get install cmake; macOS: brew install cmake)."
  if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    die "no C++ compiler found. Install one (Debian/Ubuntu: apt-get install build-essential; macOS: xcode-select --install)."
  fi
  if [ "$BACKEND" = cuda ] && ! command -v nvcc >/dev/null 2>&1; then
    die "backend cuda needs nvcc (the CUDA toolkit) on PATH."
  fi
  if [ "$BACKEND" = metal ] && [ "$(uname -s)" != Darwin ]; then
    die "backend metal needs macOS."
  fi
}

# --- source ----------------------------------------------------------------
# Prints the llama.cpp source directory; sets SOURCE_ID and VERSION_FLAGS.
fetch_pinned_source() {
  local src_root="$CACHE_DIR/src"
  local tarball="$src_root/llama_cpp_python-${SDIST_VERSION}.tar.gz"
  local tree="$src_root/llama_cpp_python-${SDIST_VERSION}"
  mkdir -p "$src_root"
  if [ ! -f "$tree/.complete" ]; then
    if [ ! -f "$tarball" ] || [ "$(sha256_of "$tarball")" != "$SDIST_SHA256" ]; then
      local python="${PYTHON:-python3}"
      command -v "$python" >/dev/null 2>&1 || die "python3 is needed to fetch the source from PyPI."
      log "fetching ${SDIST_NAME}==${SDIST_VERSION} source distribution from PyPI"
      local reqs
      reqs="$(mktemp)"
      printf '%s==%s --hash=sha256:%s\n' "$SDIST_NAME" "$SDIST_VERSION" "$SDIST_SHA256" >"$reqs"
      "$python" -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
        -r "$reqs" -d "$src_root" >&2 || { rm -f "$reqs"; die "could not download ${SDIST_NAME}==${SDIST_VERSION}"; }
      rm -f "$reqs"
    fi
    [ "$(sha256_of "$tarball")" = "$SDIST_SHA256" ] || die "sha256 mismatch for $tarball"
    log "unpacking $(basename "$tarball")"
    rm -rf "$tree"
    tar -xzf "$tarball" -C "$src_root"
    [ -f "$tree/vendor/llama.cpp/CMakeLists.txt" ] || die "no vendor/llama.cpp in $tarball"
    touch "$tree/.complete"
  fi
  SOURCE_DIR="$tree/vendor/llama.cpp"
  SOURCE_ID="pypi:${SDIST_NAME}==${SDIST_VERSION}"
  # The sdist has no .git, so tell CMake which llama.cpp commit it carries
  # (llama-cpp-python's changelog names it) so `llama-server --version` is real.
  local commit
  commit="$(grep -m1 -o 'llama.cpp@[0-9a-f]\{7,40\}' "$tree/CHANGELOG.md" | cut -d@ -f2 || true)"
  VERSION_FLAGS=("-DLLAMA_BUILD_COMMIT=${commit:-unknown}")
}

identify_checkout() {
  [ -f "$SOURCE_DIR/CMakeLists.txt" ] || die "$SOURCE_DIR is not a llama.cpp checkout (no CMakeLists.txt)"
  SOURCE_DIR="$(cd "$SOURCE_DIR" && pwd)"
  VERSION_FLAGS=()
  if git -C "$SOURCE_DIR" rev-parse HEAD >/dev/null 2>&1; then
    local head dirty
    head="$(git -C "$SOURCE_DIR" rev-parse HEAD)"
    dirty="$(git -C "$SOURCE_DIR" status --porcelain --untracked-files=no | sha256_stdin)"
    SOURCE_ID="git:${SOURCE_DIR}@${head}+${dirty}"
  else
    # No git: identify the tree by its source files' names, sizes and times.
    SOURCE_ID="dir:${SOURCE_DIR}@$(cd "$SOURCE_DIR" && find . -path ./build -prune -o -type f \
      \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.m' -o -name 'CMakeLists.txt' \) \
      -print0 | sort -z | xargs -0 ls -ln 2>/dev/null | awk '{print $5, $6, $7, $8, $9}' | sha256_stdin)"
  fi
}

backend_flags() {
  case "$BACKEND" in
    cpu) if [ "$(uname -s)" = Darwin ]; then echo "-DGGML_METAL=OFF"; fi ;;
    cuda) echo "-DGGML_CUDA=ON" ;;
    metal) echo "-DGGML_METAL=ON" ;;
  esac
}

# The RPC worker's CMake target: ggml-rpc-server in our pinned llama.cpp, rpc-server in
# older checkouts (the BitNet fork's included).
rpc_target() {
  if grep -q 'ggml-rpc-server' "$SOURCE_DIR/tools/rpc/CMakeLists.txt" 2>/dev/null; then
    echo ggml-rpc-server
  else
    echo rpc-server
  fi
}

main() {
  SOURCE_ID=""
  VERSION_FLAGS=()
  if [ -n "$SOURCE_DIR" ]; then identify_checkout; else
    if [ "$PRINT_KEY" = 0 ]; then check_tools; fi
    fetch_pinned_source
  fi

  local flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_CURL=OFF
  )
  # ggml's AMX kernels (picked by -march=native on recent Xeons) crash with SIGSEGV where the
  # kernel or hypervisor does not grant AMX tile state, as on our CI VMs; the gain is small,
  # so x86-64 builds leave AMX out. Explicit -mno-* flags win over -march=native in GCC and
  # Clang. --amx keeps it.
  if [ "$KEEP_AMX" = 0 ] && { [ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = amd64 ]; }; then
    flags+=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
            "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
  fi
  # llama.cpp's RPC backend lets a child put layers on other machines' rpc-server workers
  # (`--rpc host:port`); the flag is part of the cache key.
  if [ "$WITH_RPC" = 1 ]; then flags+=(-DGGML_RPC=ON); fi
  local bflag
  bflag="$(backend_flags)"
  if [ -n "$bflag" ]; then flags+=("$bflag"); fi
  if [ ${#EXTRA_FLAGS[@]} -gt 0 ]; then flags+=("${EXTRA_FLAGS[@]}"); fi
  if [ ${#VERSION_FLAGS[@]} -gt 0 ]; then flags+=("${VERSION_FLAGS[@]}"); fi

  local key
  key="$(printf '%s\n' "$SOURCE_ID" "$BACKEND" "$(uname -s)-$(uname -m)" "${flags[@]}" | sha256_stdin | cut -c1-16)"
  if [ "$PRINT_KEY" = 1 ]; then echo "$key"; return 0; fi

  local out="$CACHE_DIR/builds/$key"
  local binary="$out/bin/llama-server"
  if [ "$FORCE" = 0 ] && [ -x "$binary" ] && [ -f "$out/build-info.txt" ]; then
    log "cached build $key ($(head -n1 "$out/build-info.txt"))"
    echo "$binary"
    return 0
  fi

  check_tools
  log "building llama-server: backend=$BACKEND source=$SOURCE_ID jobs=$JOBS"
  log "build directory: $out/build"
  mkdir -p "$out"
  cmake -S "$SOURCE_DIR" -B "$out/build" "${flags[@]}" >&2
  local targets=(llama-server)
  if [ "$WITH_RPC" = 1 ]; then targets+=("$(rpc_target)"); fi
  cmake --build "$out/build" --config Release --target "${targets[@]}" -j "$JOBS" >&2
  mkdir -p "$out/bin"
  local target built
  for target in "${targets[@]}"; do
    built="$(find "$out/build" -type f -name "$target" -perm -u+x | head -n1)"
    [ -n "$built" ] || die "the build finished but produced no $target binary"
    cp "$built" "$out/bin/$target.tmp" && mv "$out/bin/$target.tmp" "$out/bin/$target"
  done
  {
    echo "source=$SOURCE_ID backend=$BACKEND"
    printf 'flags=%s\n' "${flags[*]}"
    "$binary" --version 2>&1 | head -n 5 || true
  } >"$out/build-info.txt"
  log "done: $("$binary" --version 2>&1 | head -n1 || true)"
  echo "$binary"
}

main
