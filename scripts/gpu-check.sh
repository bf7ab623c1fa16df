#!/usr/bin/env bash
# Checks backend-monitor's GPU memory figures against nvidia-smi on a machine with an NVIDIA GPU,
# its driver, nvidia-smi and Python with PyTorch (no Rust needed: it runs the release binaries
# built elsewhere, target/release/{backend-monitor,demo-backend}).
#
# A managed backend is the demo backend plus a PyTorch worker (its child) that holds a known
# amount of GPU memory. The script compares the per-backend VRAM backend-monitor reports with
# `nvidia-smi --query-compute-apps`, shuts the backend down, and checks the freed report.
# Figures go to stdout and, when $OUT is set, to $OUT/gpu-check.json.
#
#   scripts/gpu-check.sh [GIB]    # GIB: GPU memory the worker allocates (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB="${1:-2}"
PORT="${GPU_CHECK_PORT:-3990}"
BIN=target/release
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat > "$WORK/worker.py" <<EOF
import time, torch
held = torch.ones($GIB * 1024**3, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("worker holds $GIB GiB on", torch.cuda.get_device_name(0), flush=True)
time.sleep(10**6)
EOF
cat > "$WORK/models.toml" <<EOF
[settings]
listen = "127.0.0.1:$PORT"
health_attempts = 120

[[models]]
name = "torch"
command = ["sh", "-c", "python3 $WORK/worker.py & exec \"\$0\" \"\$@\"", "$PWD/$BIN/demo-backend"]
model = "torch.bin"
options = ["weights_mib:64"]
EOF

"$BIN/backend-monitor" --config "$WORK/models.toml" > "$WORK/server.log" 2>&1 &
SERVER=$!
api() { curl -sf "http://127.0.0.1:$PORT$1" "${@:2}"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# Wait until the backend's measured GPU memory covers what the worker allocated (up to 120 s).
expected=$((GIB * 1024 * 1024 * 1024))
for _ in $(seq 120); do
  vram=$(api /api/backends 2>/dev/null | field "sum(g['used'] for b in d['backends'] if b['name']=='torch' for g in (b.get('observation') or {}).get('measured', {}).get('gpu_memory', []))" 2>/dev/null || echo 0)
  [ "${vram:-0}" -ge "$expected" ] && break
  sleep 1
done
snapshot=$(api /api/backends)
if [ "${vram:-0}" -lt "$expected" ]; then
  echo "backend-monitor never saw ${GIB} GiB on the torch backend; what the machine says:"
  nvidia-smi || true
  ldconfig -p | grep -i nvidia-ml || echo "no libnvidia-ml in ldconfig"
  echo "$snapshot" | field "[b for b in d['backends'] if b['name']=='torch']" || true
  api /system || true; echo
  tail -20 "$WORK/server.log"
fi
smi=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits)
echo "nvidia-smi compute apps (pid, MiB):"; echo "$smi"
tree_pids=$(echo "$snapshot" | field "' '.join(str(p['pid']) for b in d['backends'] if b['name']=='torch' for p in b['observation']['measured']['processes'])")
smi_mib=0
for pid in $tree_pids; do
  mib=$(echo "$smi" | awk -F', *' -v p="$pid" '$1==p {print $2}')
  smi_mib=$((smi_mib + ${mib:-0}))
done
reported_mib=$((vram / 1024 / 1024))
echo "backend-monitor: torch holds ${reported_mib} MiB of GPU memory; nvidia-smi: ${smi_mib} MiB for pids ${tree_pids}"

# What a user sees while the backend holds the GPU: `ps` and the GPU series of /metrics.
"$BIN/backend-monitor" ps --url "http://127.0.0.1:$PORT" || true
api /metrics | grep -i gpu || true

stop=$(api /backend/shutdown -H 'Content-Type: application/json' -d '{"model": "torch"}')
echo "shutdown: $stop"
result=$(python3 - "$expected" "$reported_mib" "$smi_mib" "$stop" <<'EOF'
import json, sys
expected, reported_mib, smi_mib, stop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
freed = stop.get("freed", {})
gpu = next(iter(freed.get("gpus", [])), {})
checks = {
    "reported_matches_nvidia_smi": abs(reported_mib - smi_mib) <= max(16, smi_mib // 100),
    "reported_covers_allocation": reported_mib * 1024 * 1024 >= expected,
    "freed_gpu_before_covers_allocation": freed.get("gpu_memory_before", 0) >= expected,
    "gpu_used_dropped": gpu.get("used_before", 0) - gpu.get("used_after", 0) >= expected * 0.9,
    "nothing_still_held": not freed.get("still_held"),
}
print(json.dumps({"reported_mib": reported_mib, "nvidia_smi_mib": smi_mib, "freed": freed, "checks": checks}, indent=2))
sys.exit(0 if all(checks.values()) else 1)
EOF
) && status=0 || status=$?
echo "$result"
[ -n "${OUT:-}" ] && echo "$result" > "$OUT/gpu-check.json"
[ "$status" -eq 0 ] || { echo "GPU check FAILED; server log:"; tail -20 "$WORK/server.log"; }
exit "$status"
