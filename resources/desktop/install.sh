#!/usr/bin/env bash
# Adds Machine Monitor to the desktop's application menu for this user (freedesktop.org:
# a desktop entry and the hicolor icons under ${XDG_DATA_HOME:-~/.local/share}).
#
#   install.sh [APP_FOLDER]     APP_FOLDER holds the MachineMonitor program (default: the
#                               installed app this script belongs to, two folders up)
#   install.sh --uninstall
#
# Nothing needs root; desktop-file-validate, update-desktop-database and
# gtk-update-icon-cache are used when they are installed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
entry="$data_home/applications/machine-monitor.desktop"
icons="$data_home/icons/hicolor"

refresh_caches() {
  if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$data_home/applications" || true
  fi
  if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$icons/index.theme" ]; then
    gtk-update-icon-cache -q -t "$icons" || true
  fi
}

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$entry"
  find "$icons" -path '*/apps/machine-monitor.*' -delete 2>/dev/null || true
  refresh_caches
  echo "removed $entry and the machine-monitor icons"
  exit 0
fi

# In an installed app this script is <app>/_internal/resources/desktop/install.sh.
app_folder="${1:-$here/../../..}"
if [ ! -d "$app_folder" ]; then
  echo "error: $app_folder is not a folder (give the folder that holds MachineMonitor)" >&2
  exit 1
fi
app_folder="$(cd "$app_folder" && pwd)"
program="$app_folder/MachineMonitor"
if [ ! -x "$program" ]; then
  echo "error: $program is not there or not executable (build it with: make bundle)" >&2
  exit 1
fi

mkdir -p "$(dirname "$entry")"
# Exec takes a quoted path when it has spaces (desktop entry spec, "The Exec key").
exec_value="$program"
case "$program" in *" "*) exec_value="\"$program\"" ;; esac
# Qt names the window class after the program file.
sed -e "s|@EXEC@|$exec_value|g" -e "s|@WMCLASS@|MachineMonitor|g" \
    "$here/machine-monitor.desktop.in" > "$entry.tmp"
mv "$entry.tmp" "$entry"
chmod 0644 "$entry"

(cd "$here/icons/hicolor" && find . -type f -name 'machine-monitor.*') | while read -r icon; do
  mkdir -p "$icons/$(dirname "$icon")"
  cp "$here/icons/hicolor/$icon" "$icons/$icon"
done

if command -v desktop-file-validate >/dev/null 2>&1; then
  desktop-file-validate "$entry"
fi
refresh_caches
echo "installed $entry (runs $program) and icons in $icons"
