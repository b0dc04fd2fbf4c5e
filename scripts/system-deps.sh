#!/usr/bin/env bash
# Install the Debian packages the tests need (mosquitto, the firmware host build's libraries
# and the RISC-V cross compiler) when any is missing. Needs root (or sudo); prints what is
# missing otherwise. Safe to run again: it does nothing when everything is there.
set -euo pipefail
PKGS=(mosquitto mosquitto-clients openssl libmosquitto-dev libcjson-dev libcurl4-openssl-dev libssl-dev
      cmake gcc make pkgconf gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf tmux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "system-deps: run as root: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
