#!/usr/bin/env bash
# The build environment every script of this repo shares (sourced by .ci/run,
# scripts/test and bench/*), so they all reuse one build:
# - CARGO_TARGET_DIR outside the clone, kept between CI runs on a machine;
# - ccache in front of the C/C++ compilers when it is installed. DuckDB's C++
#   is most of a cold build (about 30 minutes on two cores); the compilers
#   are part of its build script's inputs, so every script must name the same
#   ones or cargo builds DuckDB again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
if command -v ccache >/dev/null 2>&1; then
  export CC="${CC:-ccache gcc}" CXX="${CXX:-ccache g++}"
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
fi
