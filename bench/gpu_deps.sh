#!/usr/bin/env bash
# Download, here, the wheels bench/gpu_run.sh installs on a bare CUDA machine (python 3.12,
# x86_64; docs in /work/.library/device/README.md): open_clip and the pure-Python packages it
# needs that the machine lacks, and faiss-cpu, which emcl/retrieval/ann.py imports when the
# explorer loads. Everything else the suite imports is already there (torch, numpy, timm,
# regex, safetensors, tqdm, huggingface-hub, opencv-python-headless, ...).
#
#   bash bench/gpu_deps.sh        # from the repository root; writes .whl/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  open_clip_torch==3.3.0  # the model factory (requirements.txt)
  ftfy==6.3.1             # open_clip's tokenizer
  wcwidth==0.7.0          # ftfy's
  faiss-cpu==1.15.1       # requirements.txt; imported by the explorer (emcl/retrieval/ann.py)
)

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d .whl "${WHEELS[@]}"
ls -l .whl
du -sh .whl
# The tree that travels (tracked + untracked-not-ignored files, plus the carried .whl) must
# stay under 64 MiB.
tree_kib=$(git ls-files -co --exclude-standard -z | du -ck --files0-from=- | tail -1 | cut -f1)
whl_kib=$(du -sk .whl | cut -f1)
echo "travelling: $(( (tree_kib + whl_kib) / 1024 )) MiB of 64 (tree $(( tree_kib / 1024 )), .whl $(( whl_kib / 1024 )))"
if (( tree_kib + whl_kib > 64 * 1024 )); then
  echo "over the 64 MiB the device tool carries" >&2
  exit 1
fi
