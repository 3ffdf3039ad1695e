#!/usr/bin/env bash
# Copies the shared kernel bodies of kernels/ (issue 5) into the Swift package's resources, where
# the Metal backend compiles them at run time. `swift test` fails while the copies differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/swift/MobileMoEKit/Sources/MobileMoEKit/Kernels"
for f in mm_metal.h moe_common.h moe_decode.h moe_prefill.h moe_kernels.metal; do
  cp "$root/kernels/$f" "$dest/$f"
done
echo "copied kernels/{mm_metal.h,moe_common.h,moe_decode.h,moe_prefill.h,moe_kernels.metal} to ${dest#$root/}"
