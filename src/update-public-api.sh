#!/usr/bin/env bash
# Records the public API of every src/ project in its PublicAPI.Unshipped.txt, with the PublicApiAnalyzers' own code
# fix: new public symbols are added (RS0016), removed ones dropped (RS0017). Review the diff of those files: it is the
# change of the surface. Usage: src/update-public-api.sh
set -euo pipefail
cd "$(dirname "$0")"
for project in */*.csproj; do
  dir=$(dirname "$project")
  for file in PublicAPI.Shipped.txt PublicAPI.Unshipped.txt; do
    [ -f "$dir/$file" ] || printf '#nullable enable\n' >"$dir/$file"
  done
  dotnet format analyzers "$project" --diagnostics RS0016 RS0017 --severity warn -v q
done
