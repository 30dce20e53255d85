# Sourced from the repository root by the scripts a device call runs (benchmarks/gpu_check.sh, and the session
# scripts under benchmarks/results/): installs the wheels carried in .gpuwheels*/ (flash-linear-attention,
# fla-core; the GPU image has no internet) into /tmp/site and exports what the GPU runs take: that site and the
# repository on PYTHONPATH, compiled Triton (not its interpreter), unbuffered output.
shopt -s nullglob
_gpu_wheels=(.gpuwheels*/*.whl)
if ((${#_gpu_wheels[@]})); then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "${_gpu_wheels[@]}" >/dev/null 2>&1
fi
export PYTHONPATH=/tmp/site:$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
