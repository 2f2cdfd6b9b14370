#!/usr/bin/env bash
# One-shot, idempotent set-up of everything hpccl needs on a fresh Debian machine:
#   OpenMPI (Debian packages, only when no mpicc is found), a virtual environment .venv,
#   torch 2.13.0 (CPU build from the local wheel where the site provides one), the Python
#   dependencies in setup.cfg, mpi4py built against the system MPI, and Horovod 0.28.1
#   built with PyTorch + MPI + Gloo ops.
# Beside it, for the tests of the rehearsal path under another MPI family: Debian's MPICH and
# a second environment .venv-mpich whose own mpi4py is built against MPICH and which reuses
# everything else from .venv (HPCCL_SKIP_MPICH=1 skips this).
# Expensive builds (Horovod, mpi4py) are cached as wheels outside the repository, in
# $HPCCL_CACHE (default ~/.cache/hpccl), so a second set-up takes seconds.
# A stamp in .venv records what was installed; re-running with nothing changed is a no-op.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HPCCL_VENV:-$ROOT/.venv}
CACHE=${HPCCL_CACHE:-$HOME/.cache/hpccl}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
HOROVOD_VERSION=0.28.1
STAMP="$VENV/.hpccl-setup"

say() { echo "[hpccl setup] $*" >&2; }

want_stamp() {
  # Everything that should trigger a re-install when it changes.
  cat "$ROOT/setup.cfg" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1
}

VENV_MPICH=${HPCCL_VENV_MPICH:-$ROOT/.venv-mpich}
want_mpich() { [[ "${HPCCL_SKIP_MPICH:-0}" != 1 ]]; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" ]] && command -v mpicc >/dev/null \
   && { ! want_mpich || [[ -x "$VENV_MPICH/bin/python" ]]; }; then
  exit 0
fi

# --- 1. MPI ------------------------------------------------------------------------------
if ! command -v mpicc >/dev/null; then
  pkgs="openmpi-bin libopenmpi-dev"
  if [[ $(id -u) -ne 0 ]]; then
    say "no MPI compiler wrapper (mpicc) found and not running as root."
    say "Ask your admin to install the Debian packages: $pkgs"
    say "(or 'module load' your site's MPI), then run this script again."
    exit 1
  fi
  say "installing OpenMPI from Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $pkgs build-essential >/dev/null
fi

# The multi-host test bed (tests/cluster) builds hosts from network namespaces: ip and tc.
if ! command -v tc >/dev/null || ! command -v ip >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    say "installing iproute2 (ip, tc) for the multi-host test bed"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends iproute2 >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null; }
  else
    say "ip/tc not found (Debian: iproute2): the multi-host tests will be skipped"
  fi
fi

# `hpccl model --engine simgrid` replays iterations in SimGrid's SMPI: Debian's package ships
# smpirun and its trace-replay program (smpireplaymain), so nothing is built.
if ! command -v smpirun >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    say "installing SimGrid (libsimgrid-dev: smpirun) for hpccl model --engine simgrid"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends libsimgrid-dev >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libsimgrid-dev >/dev/null; }
  else
    say "smpirun not found (Debian: libsimgrid-dev): hpccl model --engine simgrid and its tests need it"
  fi
fi

# --- 2. virtual environment -----------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel

# torch first and pinned: anything that asks for an unpinned torch would otherwise pull a
# multi-GB CUDA build. With 2.13.0 installed, later requirements like torch>=2.1 are satisfied.
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi

# --- 3. mpi4py, built against the MPI found above, wheel cached ------------------------------------
mkdir -p "$CACHE/wheels"
mpi_tag=$(mpicc -showme:version 2>/dev/null | tr -cd '[:alnum:].' | head -c 40 || true)
if ! "$PY" -c "import mpi4py" 2>/dev/null; then
  whl=$(ls "$CACHE"/wheels/mpi4py-*.whl 2>/dev/null | head -1 || true)
  if [[ -z "$whl" || ! -f "$CACHE/wheels/mpi4py.mpi" || "$(cat "$CACHE/wheels/mpi4py.mpi")" != "$mpi_tag" ]]; then
    say "building mpi4py against $(command -v mpicc)"
    rm -f "$CACHE"/wheels/mpi4py-*.whl
    "$PY" -m pip wheel -q --no-deps --no-binary mpi4py -w "$CACHE/wheels" "mpi4py>=3.1,<5"
    echo "$mpi_tag" > "$CACHE/wheels/mpi4py.mpi"
    whl=$(ls "$CACHE"/wheels/mpi4py-*.whl | head -1)
  fi
  "${PIP[@]}" "$whl"
fi

# --- 4. hpccl and its pure-Python dependencies (setup.cfg) -------------------------------------------
say "installing hpccl (editable) and its dependencies"
"${PIP[@]}" -e "$ROOT[test]"

# --- 5. Horovod ---------------------------------------------------------------------------------------
if [[ "${HPCCL_SKIP_HOROVOD:-0}" != 1 ]] && ! "$PY" -c "import horovod.torch" 2>/dev/null; then
  # With a CUDA build of torch and nvcc, Horovod gets its NCCL operations: GPU gradients are
  # then allreduced by NCCL on the device instead of staged through host memory for MPI.
  gpu_ops=""
  if command -v nvcc >/dev/null && "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    gpu_ops=NCCL
  fi
  key="py$("$PY" -c 'import sys;print(f"{sys.version_info[0]}{sys.version_info[1]}")')-torch$TORCH_VERSION-$mpi_tag${gpu_ops:+-nccl}"
  hdir="$CACHE/horovod-$HOROVOD_VERSION-$key"
  whl=$(ls "$hdir"/horovod-*.whl 2>/dev/null | head -1 || true)
  if [[ -z "$whl" ]]; then
    say "building Horovod $HOROVOD_VERSION with PyTorch+MPI+Gloo${gpu_ops:+ and NCCL ops} (about 4 minutes on 2 cores)"
    command -v cmake >/dev/null || { say "cmake is needed to build Horovod: apt-get install cmake"; exit 1; }
    mkdir -p "$hdir"
    # Horovod 0.28.1 hard-codes -std=c++14 but torch>=2.1 headers need C++17: a compiler
    # wrapper rewrites the flag (Horovod has no option for it).
    wrap="$hdir/cxx17"
    cat > "$wrap" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do [[ "$a" == "-std=c++14" ]] && a="-std=c++17"; args+=("$a"); done
exec "${HPCCL_REAL_CXX:-g++}" "${args[@]}"
WRAP
    chmod +x "$wrap"
    "${PIP[@]}" cmake packaging psutil cloudpickle pyyaml >/dev/null
    ( export CXX="$wrap" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
             HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
      [[ -n "$gpu_ops" ]] && export HOROVOD_GPU_OPERATIONS="$gpu_ops"
      "$PY" -m pip wheel --no-build-isolation --no-deps -w "$hdir" "horovod==$HOROVOD_VERSION" ) \
      > "$hdir/build.log" 2>&1 || { say "Horovod build failed; log: $hdir/build.log"; tail -30 "$hdir/build.log" >&2; rm -f "$hdir"/*.whl; exit 1; }
    whl=$(ls "$hdir"/horovod-*.whl | head -1)
  fi
  "${PIP[@]}" "$whl"
fi

# --- 6. MPICH beside OpenMPI, and .venv-mpich ------------------------------------------------------
if want_mpich; then
  if ! command -v mpicc.mpich >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
      say "MPICH (mpicc.mpich) not found and not running as root: the tests under MPICH will fail."
      say "Install the Debian packages mpich libmpich-dev, or set HPCCL_SKIP_MPICH=1."
      exit 1
    fi
    say "installing MPICH from Debian packages (beside OpenMPI, which stays the default mpirun)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mpich libmpich-dev >/dev/null
  fi
  mpich_tag=$(mpichversion 2>/dev/null | head -1 | tr -cd '[:alnum:].' || echo mpich)
  if ! "$VENV_MPICH/bin/python" -c "from mpi4py import MPI; import sys; sys.exit('MPICH' not in MPI.Get_library_version())" 2>/dev/null; then
    mdir="$CACHE/wheels-mpich"
    mkdir -p "$mdir"
    whl=$(ls "$mdir"/mpi4py-*.whl 2>/dev/null | head -1 || true)
    if [[ -z "$whl" || ! -f "$mdir/mpi4py.mpi" || "$(cat "$mdir/mpi4py.mpi")" != "$mpich_tag" ]]; then
      say "building mpi4py against MPICH ($(command -v mpicc.mpich))"
      rm -f "$mdir"/mpi4py-*.whl
      # --no-cache-dir: pip would otherwise reuse the OpenMPI build from its wheel cache
      MPICC=mpicc.mpich "$PY" -m pip wheel -q --no-cache-dir --no-deps --no-binary mpi4py -w "$mdir" "mpi4py>=3.1,<5"
      echo "$mpich_tag" > "$mdir/mpi4py.mpi"
      whl=$(ls "$mdir"/mpi4py-*.whl | head -1)
    fi
    say "creating $VENV_MPICH (mpi4py for MPICH; everything else from $VENV)"
    "$PYTHON" -m venv "$VENV_MPICH"
    "$VENV_MPICH/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$whl"
    base=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
    own=$("$VENV_MPICH/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    # addsitedir (not a plain path) so that .venv's own .pth files (the editable hpccl) apply too
    echo "import site; site.addsitedir('$base')" > "$own/hpccl-base.pth"
  fi
fi

want_stamp > "$STAMP"
say "done: $("$PY" -c 'import torch, mpi4py, h5py; print("torch", torch.__version__, "| mpi4py", mpi4py.__version__, "| h5py", h5py.__version__)')"
