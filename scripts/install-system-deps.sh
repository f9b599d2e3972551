#!/usr/bin/env bash
# Installs the Debian packages the app and its tests need: Java 17 and Maven for the
# local Kafka broker, the JDK's jmods for the installed app's Java runtime, Qt's X11
# libraries, Xvfb and a tray host for the system-tray tests, the freedesktop entry
# validator and GLib's launcher for the start-at-login tests. Does nothing when everything is present; as
# non-root it prints the command.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
# jlink and a JDK's jmods: the installed app's Java runtime is linked from them (build.spec).
# Debian 12 ships the jmods in the JDK package, later releases in openjdk-17-jmods.
if ! compgen -G "/usr/lib/jvm/*/jmods/java.base.jmod" >/dev/null; then
  need+=(openjdk-17-jdk-headless)
  apt-cache show openjdk-17-jmods >/dev/null 2>&1 && need+=(openjdk-17-jmods)
fi
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v trayer >/dev/null 2>&1 || need+=(trayer)
command -v xwd >/dev/null 2>&1 || need+=(x11-apps)
command -v xprop >/dev/null 2>&1 || need+=(x11-utils)  # xprop, xwininfo: what a window shows
command -v desktop-file-validate >/dev/null 2>&1 || need+=(desktop-file-utils)
command -v gio >/dev/null 2>&1 || need+=(libglib2.0-bin)  # gio launch: runs an entry as a desktop would
for lib in libxcb-cursor0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3 \
           libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 \
           libxcb-render-util0 libxcb-image0; do
  dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
done

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "== system packages missing: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "Run as root: apt-get update && apt-get install -y ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
