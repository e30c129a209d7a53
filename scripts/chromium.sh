# Sourced (bash) by the scripts that drive headless Chromium and by .ci/run: sets `chromium` to the browser's path
# ($CHROMIUM, else chromium or chromium-browser on PATH), installing the Debian package `chromium` with apt-get
# where there is none (as root, or through sudo; `apt-get update` first if the install fails).
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$chromium" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y chromium || { $sudo apt-get update && $sudo apt-get install -y chromium; }
    chromium="$(command -v chromium)"
fi
