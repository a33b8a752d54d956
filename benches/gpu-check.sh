#!/usr/bin/env bash
# The device check for a session that is lent a GPU machine (DEVELOPERS.md). That machine
# has no Rust: build `bella` here (`cargo build --release`), copy target/release/bella to
# .device/bella (ignored by git, carried to the machine), and run this script there from
# the repository root:
#     benches/gpu-check.sh            # writes under $OUT (default ./gpu-check-out)
# It runs `bella doctor` (every op against the float64 oracle) on cuda and wgpu, then
# `bella bench` on both, and tees everything under $OUT: gpu-check.log (card, driver,
# every command and its exit status), doctor-{cuda,wgpu}.txt, bench-{cuda,wgpu}.txt and
# bench-{cuda,wgpu}.json, bench-cuda-cpu-scale.{txt,json}, bench-cuda-{bf16,f16}.{txt,json}, bench-wgpu-bf16.{txt,json}. Exit
# status: 0 when every command succeeded.
# wgpu needs a Vulkan loader: when .gl/*.deb exist (see the device README), each is
# unpacked into a private prefix that LD_LIBRARY_PATH points at, and the NVIDIA ICD is
# selected with VK_ICD_FILENAMES / VK_DRIVER_FILES.
set -u -o pipefail

OUT=${OUT:-$PWD/gpu-check-out}
BIN=${BELLA_BIN:-.device/bella}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: >"$LOG"

say() { echo "== $*" | tee -a "$LOG"; }

if [ ! -x "$BIN" ]; then
    say "no executable $BIN: build bella (cargo build --release) and copy it there"
    exit 2
fi

say "machine: $(uname -srm)"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true; } | tee -a "$LOG"

if compgen -G ".gl/*.deb" >/dev/null; then
    PREFIX=${TMPDIR:-/tmp}/bella-vulkan
    mkdir -p "$PREFIX"
    for deb in .gl/*.deb; do
        dpkg -x "$deb" "$PREFIX"
    done
    export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/usr/lib:${LD_LIBRARY_PATH:-}"
    say "Vulkan loader unpacked into $PREFIX"
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
    /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then
        export VK_ICD_FILENAMES="$icd" VK_DRIVER_FILES="$icd"
        say "Vulkan ICD: $icd"
        break
    fi
done

status=0
run() {
    local name=$1
    shift
    say "$*"
    "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    say "exit $rc: $*"
    [ "$rc" -eq 0 ] || status=1
}

run doctor-cuda "$BIN" doctor --backend cuda
run doctor-wgpu "$BIN" doctor --backend wgpu
run bench-cuda "$BIN" bench --backend cuda --json "$OUT/bench-cuda.json"
# the LoRA ops at the CPU-scale shapes too (K=8 M=256 I=O=1024 r=8): with a shared x there
# they run lora_forward_64x32, which the GPU-scale shapes do not reach
run bench-cuda-cpu-scale "$BIN" bench --backend cuda --op lora_forward,lora_backward --scale cpu \
    --json "$OUT/bench-cuda-cpu-scale.json"
# the 16-bit ops on the tensor cores through the op layer (matmul on gemm_mma_*, lora_forward
# on gemm_mma_* + lora_forward_mma_*, lora_backward's products on gemm_mma_*); f16 runs the
# same shapes on the f16 entries
run bench-cuda-bf16 "$BIN" bench --backend cuda --op matmul,lora_forward,lora_backward \
    --dtype bf16 --json "$OUT/bench-cuda-bf16.json"
run bench-cuda-f16 "$BIN" bench --backend cuda --op matmul,lora_forward \
    --dtype f16 --json "$OUT/bench-cuda-f16.json"
run bench-wgpu "$BIN" bench --backend wgpu --json "$OUT/bench-wgpu.json"
# wgpu's 16-bit matmul and lora_forward read the packed operands as stored; the comparison
# half_lora_forward_vs_widened times that against cast-to-f32 + the f32 kernels
run bench-wgpu-bf16 "$BIN" bench --backend wgpu --op matmul,lora_forward --dtype bf16 \
    --json "$OUT/bench-wgpu-bf16.json"

say "done, status $status; outputs in $OUT"
exit $status
