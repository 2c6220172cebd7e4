"""Supervisor: what a worker may touch — the SandboxSpec for one role, from the config.

Landlock grants are as narrow as the runtime allows: the interpreter, its libraries and this
package read-only; the bundle and the staged reference tokenizers read-only; scratch read-write.
Beyond that, per role: the trainer and the ranks write their artifacts dir, read what gloo reads
of the network interfaces, may use loopback TCP in their own network namespace (and read the
train split under `data_access: readable`); the referee reads the saved weights; the predictor
and the auditor get nothing more. The data, held-out and key paths must lie outside every grant:
if one does not, the run stops with an error rather than expose it.
"""

from __future__ import annotations

import glob
import math
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

import prism_eval
from prism_eval.errors import EvaluatorError
from prism_eval.protocol import Role, SandboxSpec
from prism_eval.supervisor.config import EvalConfig

SYSTEM_READ_PATHS = (
    "/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
)  # fmt: skip
# Of /proc and /sys, only what torch and Python read: the worker's own /proc/<pid> (the worker
# resolves /proc/self itself) and static CPU facts. Never another process's /proc/<pid> (its
# command line is a message board), nor /sys/fs/cgroup or global counters (other workers' memory
# use, modulated, is another): workers must not talk to each other (docs/scoring.md §4).
KERNEL_READ_PATHS = (
    "/proc/self", "/proc/cpuinfo", "/sys/devices/system/cpu", "/sys/devices/system/node",
)  # fmt: skip
# What the CUDA driver reads besides; not yet narrowed on a GPU host.
CUDA_KERNEL_READ_PATHS = (
    "/proc/driver", "/proc/devices", "/proc/sys/vm", "/sys/bus", "/sys/devices", "/sys/module",
    "/sys/class",
)  # fmt: skip
# gloo maps network interfaces to PCI devices: for the ranks, and for a trainer whose loop sets
# up a one-rank process group. Only the loops read them, and they hold nothing secret; the
# predictor and auditor, which must not hear from each other, never get them.
GLOO_KERNEL_READ_PATHS = ("/sys/class/net", "/sys/bus/pci", "/sys/devices")
DEVICE_PATHS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# DataLoader workers and multiprocessing locks create files in shared memory.
SHARED_MEMORY = "/dev/shm"
CUDA_DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")


def runtime_read_paths() -> list[str]:
    """The interpreter, its standard library, the environment's packages and prism_eval."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    paths.add(str(Path(prism_eval.__file__).resolve().parent))
    return sorted(p for p in paths if p and os.path.exists(p))


def readable_by_others(path: str) -> bool:
    """Whether any user can reach `path`: every ancestor o+x, the path itself o+r."""
    current = Path(path).resolve()
    try:
        if not current.stat().st_mode & stat.S_IROTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in current.parents)
    except OSError:
        return False


def _inside(path: Path, root: str) -> bool:
    try:
        return path.resolve().is_relative_to(Path(root).resolve())
    except OSError:
        return False


def check_not_exposed(protected: Iterable[Path], granted: Iterable[str]) -> None:
    """Refuse to run when a secret path (data, held-out, key) lies inside a worker grant."""
    granted = list(granted)
    for path in protected:
        for root in granted:
            if _inside(path, root):
                raise EvaluatorError(
                    "sandbox.exposed_path",
                    f"{path} lies inside {root}, which workers may read",
                    hint="keep data, held-out data and keys outside the Python installation, "
                    "the bundle and the work directory",
                )


def sandbox_spec(
    job: Role,
    config: EvalConfig,
    *,
    bundle_dir: Path,
    scratch_dir: Path,
    artifacts_dir: Path,
    readable_data_dir: Path | None,
    protected: Iterable[Path],
    reference_tokenizer_dir: Path | None = None,
) -> SandboxSpec:
    """The isolation a worker for `job` applies to itself."""
    runtime = runtime_read_paths()
    read_paths = [*runtime, *SYSTEM_READ_PATHS, *KERNEL_READ_PATHS, str(bundle_dir)]
    if config.device == "cuda":
        read_paths += CUDA_KERNEL_READ_PATHS
    if job in ("trainer", "ranks"):
        read_paths += GLOO_KERNEL_READ_PATHS
    if job == "referee":  # it reads the saved weights, never writes there
        read_paths.append(str(artifacts_dir))
    if readable_data_dir is not None:
        read_paths.append(str(readable_data_dir))
    if reference_tokenizer_dir is not None:  # public, pinned files: ctx.reference_tokenizer
        read_paths.append(str(reference_tokenizer_dir))
    write_paths = [str(scratch_dir), SHARED_MEMORY]
    trains = job in ("trainer", "ranks")
    if trains:
        write_paths.append(str(artifacts_dir))
    devices = list(DEVICE_PATHS)
    if config.device == "cuda":
        devices += [p for pattern in CUDA_DEVICE_GLOBS for p in glob.glob(pattern)]
    check_not_exposed(protected, read_paths + write_paths)
    # Predictor roles live as long as the train stage (or the audit after it).
    timeout_s = config.probe_timeout_s if job == "probe" else config.train_timeout_s
    rlimits = {
        "nofile": config.open_files_limit,
        "core": 0,
        "fsize": config.artifacts_quota_mib * 2**20,
        "nproc": config.pids_limit,
        "cpu": math.ceil(timeout_s * (os.cpu_count() or 1) * 1.25) + 60,
    }
    if config.device == "cpu":  # CUDA maps far more address space than it uses
        rlimits["as"] = max(4096, 2 * config.memory_limit_mib) * 2**20
    as_root = os.geteuid() == 0
    # The bundle is 0o555/0o444 and prepare_worker_dirs opens the work dir to traversal.
    can_drop_uid = as_root and all(readable_by_others(p) for p in runtime)
    return SandboxSpec(
        network_namespace=True,
        # Its pages count against the worker's memory cgroup; the size caps it without one.
        private_shm_mib=max(64, config.memory_limit_mib // 2),
        no_new_privs=True,
        drop_to_uid=config.worker_uid if can_drop_uid else None,
        drop_capabilities=True,
        landlock=True,
        read_paths=read_paths,
        write_paths=write_paths,
        device_paths=devices,
        seccomp=True,
        # Loopback TCP in the worker's own namespace: between ranks, and for a trainer whose
        # loop sets up a one-rank process group (worker/process_group.py).
        allow_inet=job in ("trainer", "ranks"),
        rlimits=rlimits,
    )


def prepare_worker_dirs(work_dir: Path, dirs: Iterable[Path], uid: int | None) -> None:
    """Let a worker that runs as `uid` traverse the work dir and own its writable dirs."""
    if uid is None:
        return
    os.chmod(work_dir, 0o711)
    for path in dirs:
        os.chown(path, uid, uid)
