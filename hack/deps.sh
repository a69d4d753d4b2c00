#!/usr/bin/env bash
# deps.sh: install the few host tools the scripts use when they are missing
# (Debian packages). Go itself must be on PATH.
set -euo pipefail
command -v go >/dev/null || { echo "deps.sh: Go is required (https://go.dev/dl/)" >&2; exit 1; }
missing=()
for tool in openssl curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
((${#missing[@]})) || exit 0
echo "deps.sh: installing ${missing[*]}" >&2
if [[ $(id -u) == 0 ]]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}"
else sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"; fi
