# What the load scripts under bench/ that drive a server with wrk share; sourced, from the repository's root.

# Exits 0 with a note when wrk is missing: it is a Debian package (apt-get install wrk), not a build product, so a
# machine without it skips the measurement rather than failing it.
require_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "skipped: wrk is not installed (apt-get install wrk)"
    exit 0
  fi
}

# Builds the project at $1 in Release, quietly; exits 1 when the build fails.
build_release() {
  dotnet build -c Release "$1" -v q -nologo >/dev/null || { echo "build failed: $1"; exit 1; }
}
