#!/usr/bin/env bash
# The command the device tool runs on a bare CUDA machine, from the repository root, with the
# wheels of bench/gpu_deps.sh carried in .whl/: installs them into a folder of their own, runs
# the GPU suite under a hard timeout and copies its JSON files and the log to $OUT.
#
#   bash bench/gpu_run.sh                         # there: the full suite on cuda
#   OUT=/tmp/fakeout bash bench/gpu_run.sh --smoke --device cpu   # here: the rehearsal
#
# Arguments go to `python -m bench.gpu_suite`. GPU_SUITE_TIMEOUT (seconds, default 350) caps
# the suite; GPU_SITE (default /tmp/site) is where the wheels go; EMCL_COMMIT names the commit.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the results go to}"
site="${GPU_SITE:-/tmp/site}"
mkdir -p "$OUT"
log="$OUT/gpu_suite.log"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" .whl/*.whl >"$log" 2>&1 || { cat "$log"; echo "wheel install failed"; exit 3; }
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 - >>"$log" 2>&1 <<'EOF'
import faiss, ftfy, open_clip, torch
print("open_clip", open_clip.__version__, open_clip.__file__)
print("ftfy", ftfy.__version__, "faiss", faiss.__version__, "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.version.cuda)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv >>"$log" 2>&1

json="$(mktemp -d)"
timeout --kill-after=10 "${GPU_SUITE_TIMEOUT:-350}" \
  python3 -m bench.gpu_suite --json-dir "$json" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
cp "$json"/gpu_*.json "$OUT"/ 2>/dev/null
echo "gpu_suite exit $rc; files: $(cd "$OUT" && ls | tr '\n' ' ')" | tee -a "$log"
exit "$rc"
