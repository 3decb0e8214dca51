#!/usr/bin/env bash
# Build artpipe's release artifacts the way a release ships them:
#   - abi3 wheels (one per platform, CPython >= 3.11), cross-compiled with maturin --zig
#     (ziglang from PyPI: an old-glibc / musl sysroot without containers or root),
#   - libjpeg-turbo linked statically WITH its SIMD (cargo feature require-simd: the build
#     fails rather than ship the slow C fallback),
#   - every wheel checked by auditwheel (tag and shared-library allow-list),
#   - the sdist (with the demo art), which builds from source with the usual fallback rules.
#
# Usage: scripts/build-wheels.sh [TARGET ...]   (default: all of the targets below)
#   x86_64-manylinux2014   glibc 2.17+, x86_64     (the one CI builds and smoke-tests)
#   x86_64-musllinux       musl 1.2+, x86_64       (Alpine)
#   aarch64-manylinux2014  glibc 2.17+, arm64      (libjpeg-turbo's NEON needs no nasm)
#   sdist
# Needs: Python >= 3.11, rustup (targets are added on demand), and nasm for the x86_64
# targets — on PATH, or as $NASM (e.g. extracted from Debian's package without root).
# Output: dist/. Tools go into .release-venv/ (maturin, ziglang, auditwheel, cmake).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-manylinux2014 x86_64-musllinux aarch64-manylinux2014 sdist)

venv=.release-venv
if [ ! -x "$venv/bin/maturin" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "maturin>=1.9.4,<2" "ziglang<0.16" auditwheel "cmake>=3.18,<5"
fi
export PATH="$PWD/$venv/bin:$PATH"
if [ -n "${NASM:-}" ]; then
    export PATH="$(dirname "$NASM"):$PATH"
fi
mkdir -p dist

need_nasm() {
    if ! command -v nasm >/dev/null && ! command -v yasm >/dev/null; then
        echo "error: $1 needs nasm (or yasm) for libjpeg-turbo's SIMD; install it or set NASM=/path/to/nasm" >&2
        exit 2
    fi
}

# build TARGET-TRIPLE COMPATIBILITY TAG: one abi3 wheel, require-simd, then auditwheel's verdict.
build() {
    local triple=$1 compat=$2 tag=$3 before
    rustup target add "$triple" >/dev/null
    before=$(ls dist/*.whl 2>/dev/null || true)
    maturin build --release --zig --target "$triple" --compatibility "$compat" \
        --features python,require-simd --out dist
    local wheel
    wheel=$(comm -13 <(echo "$before" | sort) <(ls dist/*.whl | sort) | tail -1)
    [ -n "$wheel" ] || wheel=$(ls -t dist/*"${compat//./_}"*.whl | head -1)
    if [ "$triple" != "$(rustc -vV | sed -n 's/^host: //p')" ]; then
        # auditwheel resolves the wheel's libraries against this host's (a musl wheel's
        # "libc.so" is a glibc linker script here, an arm64 libc is absent): it can only judge
        # wheels for the host's own arch and libc. maturin's built-in policy check (symbol
        # versions against the tag) has run; run auditwheel on a matching machine to be sure.
        echo "note: auditwheel cannot check a $triple wheel on this host; maturin's check passed"
        return
    fi
    echo "== auditwheel show $wheel"
    auditwheel show "$wheel"
    # `show` only describes; fail unless the wheel really qualifies for the tag it carries.
    auditwheel show "$wheel" | tr -s ' \n' ' ' \
        | grep -q "is consistent with the following platform tag: \"$tag\"" \
        || { echo "error: auditwheel does not confirm $tag for $wheel" >&2; exit 1; }
}

for target in "${targets[@]}"; do
    echo "== $target"
    case "$target" in
        x86_64-manylinux2014) need_nasm "$target"; build x86_64-unknown-linux-gnu manylinux2014 manylinux_2_17_x86_64 ;;
        x86_64-musllinux)     need_nasm "$target"; build x86_64-unknown-linux-musl musllinux_1_2 musllinux_1_2_x86_64 ;;
        aarch64-manylinux2014) build aarch64-unknown-linux-gnu manylinux2014 manylinux_2_17_aarch64 ;;
        sdist)                maturin sdist --out dist ;;
        *) echo "error: unknown target $target (see the header of $0)" >&2; exit 2 ;;
    esac
done
ls -l dist
