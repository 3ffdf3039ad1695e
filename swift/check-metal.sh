#!/usr/bin/env bash
# Type-checks MobileMoEKit with its Metal backend on a machine without Metal: builds a stub
# Metal module (Tests/MetalStubs/Metal.swift, the API as imported into Swift) and runs
# `swiftc -typecheck` over the library sources in the Swift 6 language mode (strict
# concurrency), so `#if canImport(Metal)` code is compiled.
# It proves the Swift side type-checks against those signatures, not that it runs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kit="$root/swift/MobileMoEKit"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
swiftc -parse-as-library -emit-module -module-name Metal -o "$tmp/Metal.swiftmodule" "$kit/Tests/MetalStubs/Metal.swift"
find "$kit/Sources/MobileMoEKit" -name '*.swift' -print0 | xargs -0 \
  swiftc -swift-version 6 -typecheck -module-name MobileMoEKit -I "$tmp" "$kit/Tests/MetalStubs/BundleModule.swift"
echo "Metal backend type-checks (Swift 6 mode) against the stub Metal API"
