#!/usr/bin/env bash
# Packs the repository's packages into a fresh temporary folder, then restores, builds and runs this smoke test
# against that folder only (nuget.config). Restores use a fresh package cache too (NUGET_PACKAGES, for this
# script only), so a GreenRuntime package of the same version cached by an earlier run can never be used.
# Exit code 0 = the packages work. Usage: tests/PackageSmoke/run.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "-- dotnet pack -c Release -o $work/packages"
(cd "$root" && dotnet pack -c Release -o "$work/packages" --nologo -v quiet -p:ContinuousIntegrationBuild=true)
ls "$work/packages"

export GREENRUNTIME_PACKAGES="$work/packages"
export NUGET_PACKAGES="$work/nuget-cache"
echo "-- build and run tests/PackageSmoke against those packages"
dotnet build "$root/tests/PackageSmoke" -c Release --nologo -v quiet -o "$work/smoke"
dotnet "$work/smoke/PackageSmoke.dll"
