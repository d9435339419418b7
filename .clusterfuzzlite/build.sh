#!/bin/bash -eu
# Build every fuzz target into $OUT the way OSS-Fuzz and ClusterFuzzLite expect (fuzz/README.md,
# "On ClusterFuzzLite"). Run by the builder image with its environment: $CC, $CXX, $CFLAGS,
# $CXXFLAGS, $LIB_FUZZING_ENGINE, $SANITIZER, $SRC, $OUT; the checkout is $SRC/mmiofilter.
#
# $OUT gets, per harness (core_fuzz, guard_fuzz, policy_fuzz, ...):
#   <target>                  the fuzz target: a libFuzzer binary (C), or a launcher (atheris)
#   <target>_seed_corpus.zip  fuzz/corpus/<harness>/
#   <target>.dict             fuzz/dict/<harness>.dict (libFuzzer dictionary)
#   <target>.pkg              atheris only: what the launcher runs
#
# Atheris harnesses: inside the builder image (compile_python_fuzzer on PATH) the package is
# installed with the sanitizer flags and each harness is frozen by PyInstaller into
# <target>.pkg, as OSS-Fuzz's Python projects are. Outside it (a local check of this script,
# tests/test_oss_fuzz_build.py) <target>.pkg is a zipapp of the harness and its fuzzlib, run by
# $PYTHON (default python3), which must already import mmiofilter and atheris; the launcher has
# the same shape as OSS-Fuzz's.

: "${CXXFLAGS:=$CFLAGS}"
: "${SANITIZER:=address}"
PROJECT="$SRC/mmiofilter"
FUZZ="$PROJECT/fuzz"
CSRC="$PROJECT/csrc"
cd "$PROJECT"
mkdir -p "$OUT"

# The core's sources, as its one build description lists them (csrc/sources.mk).
read -r -a SOURCES <<<"$(sed -n 's/^MF_SOURCES *= *//p' "$CSRC/sources.mk")"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- the libFuzzer harnesses in C: compiled with $CC/$CFLAGS, linked by $CXX with the engine.
for src in "${SOURCES[@]}"; do
    $CC $CFLAGS -std=c11 -D_POSIX_C_SOURCE=200809L -I"$CSRC" -c "$CSRC/$src" -o "$WORK/${src%.c}.o"
done
for harness in core guard; do
    target=${harness}_fuzz
    $CC $CFLAGS -std=c11 -D_POSIX_C_SOURCE=200809L -I"$CSRC" -c "$FUZZ/$target.c" \
        -o "$WORK/$target.o"
    objs=()
    for src in "${SOURCES[@]}"; do objs+=("$WORK/${src%.c}.o"); done
    $CXX $CXXFLAGS "$WORK/$target.o" "${objs[@]}" $LIB_FUZZING_ENGINE -lpthread -o "$OUT/$target"
done

# --- the atheris harnesses.
ATHERIS_HARNESSES=()
for script in "$FUZZ"/atheris/*_fuzz.py; do
    ATHERIS_HARNESSES+=("$(basename "$script" .py)")
done

if command -v compile_python_fuzzer >/dev/null 2>&1; then
    # The builder image: build the C extension with the sanitizer flags, then freeze each
    # harness. fuzzlib is found through --paths; --collect-all takes the register maps
    # (package data) and mmiofilter._core; _cffi_backend is imported by _core's C code, where
    # PyInstaller's analysis does not look.
    pip3 install .
    for target in "${ATHERIS_HARNESSES[@]}"; do
        compile_python_fuzzer "$FUZZ/atheris/$target.py" \
            --paths "$FUZZ/atheris" --collect-all mmiofilter --hidden-import _cffi_backend
    done
else
    PYTHON=${PYTHON:-python3}
    "$PYTHON" -c 'import atheris, mmiofilter' || {
        echo "build.sh: $PYTHON cannot import atheris and mmiofilter (pip install -e '.[fuzz]')" >&2
        exit 1
    }
    for target in "${ATHERIS_HARNESSES[@]}"; do
        pkg="$WORK/$target.pkg.d"
        mkdir -p "$pkg"
        cp "$FUZZ/atheris/$target.py" "$FUZZ/atheris/fuzzlib.py" "$pkg/"
        printf 'import runpy\nrunpy.run_module("%s", run_name="__main__")\n' "$target" \
            >"$pkg/__main__.py"
        "$PYTHON" -m zipapp "$pkg" -o "$OUT/$target.pkg"
        chmod -x "$OUT/$target.pkg"  # OSS-Fuzz finds targets by their executable bit
        # OSS-Fuzz's launcher shape: the marker comment, then the package run with the
        # fuzzer's arguments. No LD_PRELOAD: this package's extension is not sanitized.
        cat >"$OUT/$target" <<LAUNCHER
#!/bin/sh
# LLVMFuzzerTestOneInput for fuzzer detection.
this_dir=\$(dirname "\$0")
exec "$PYTHON" "\$this_dir/$target.pkg" "\$@"
LAUNCHER
        chmod +x "$OUT/$target"
    done
fi

# --- seeds and dictionaries, for every target.
for target in core_fuzz guard_fuzz "${ATHERIS_HARNESSES[@]}"; do
    harness=${target%_fuzz}
    if [ -d "$FUZZ/corpus/$harness" ]; then
        rm -f "$OUT/${target}_seed_corpus.zip"
        (cd "$FUZZ/corpus/$harness" && "${PYTHON:-python3}" -m zipfile -c \
            "$OUT/${target}_seed_corpus.zip" ./*)
    fi
    if [ -f "$FUZZ/dict/$harness.dict" ]; then
        cp "$FUZZ/dict/$harness.dict" "$OUT/$target.dict"
    fi
done
echo "build.sh: $SANITIZER build of core_fuzz guard_fuzz ${ATHERIS_HARNESSES[*]} in $OUT"
