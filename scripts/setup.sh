#!/usr/bin/env bash
# Idempotent development set-up: Debian packages (with sudo when not root) and a venv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(python3-venv python3-dev gcc pkg-config libasound2-dev libsystemd-dev
      alsa-utils pulseaudio pulseaudio-utils libasound2-plugins espeak-ng sox shellcheck libspeexdsp1
      pocketsphinx-testdata   # recorded human speech for the tests (vatel_edge/devkit/speech.py)
      mosquitto mosquitto-clients  # the real MQTT broker and an outside consumer for tests/mqtt
      chromium)  # the headless browser that screenshots `vatel-edge report` pages (tests/report)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.vatel-edge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing vatel-edge and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,aec,wakeword,mqtt]'
  touch "$stamp"
fi
# the DTLN-aec models (audio.echo_cancel = "dtln"; tests/aec/test_dtln.py): checked, fetched when missing
.venv/bin/python -m vatel_edge.audio.aec_dtln >/dev/null
echo "setup: ready (.venv)"
