"""Start the processes of a distributed job: GPUs (NCCL), CPUs (gloo), or under torchrun.

detectron2 v0.6's :func:`detectron2.engine.launch` asserts CUDA in every worker and calls
``torch.cuda.set_device``, so it cannot start CPU processes. :func:`launch` keeps its
signature and its behaviour on GPUs (it delegates to it) and adds:

- **CPU processes** (no CUDA, or ``backend="gloo"``): ``num_gpus_per_machine`` means
  processes per machine; they join a gloo process group;
- **torchrun**: when torchrun (or any launcher) already started this process and set
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT``, the process group is initialised from them and ``main_func`` runs here.

In every case detectron2's per-machine group (``comm._LOCAL_PROCESS_GROUP``, behind
``comm.get_local_rank()`` / ``get_local_size()``) is created, as detectron2's launcher does.
See docs/distributed.md.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.engine.launch import launch as _detectron2_launch
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "LaunchError", "check_launch_args", "launch", "torchrun_env"]

logger = logging.getLogger(__name__)

# What torchrun sets in each process it starts.
_INT_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
TORCHRUN_VARS = _INT_VARS + ("MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("nccl", "gloo")


class LaunchError(ValueError):
    """An impossible combination of launch flags; the message names the flag to change."""


def torchrun_env() -> Optional[dict]:
    """The torchrun variables when this process was started by torchrun (``RANK`` and
    ``WORLD_SIZE`` set), else None. Raises :class:`LaunchError` if some are missing."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    missing = [k for k in TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise LaunchError(
            f"RANK and WORLD_SIZE are set but {', '.join(missing)} not: start the job with "
            "torchrun (which sets all of them), or unset RANK/WORLD_SIZE to use --num-gpus"
        )
    env = {k: os.environ[k] for k in TORCHRUN_VARS}
    for key in _INT_VARS:
        env[key] = int(env[key])
    return env


def default_backend() -> str:
    """The backend by default: "nccl" where CUDA is available, else "gloo" (CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def check_launch_args(
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    backend: Optional[str] = None,
) -> None:
    """Raise :class:`LaunchError`, naming the command-line flag, for a combination that
    cannot start; called by :func:`launch` and, before anything starts, by train_net."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise LaunchError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise LaunchError("the nccl backend needs CUDA, which is not available; use gloo (CPU)")
    env = torchrun_env()
    if env is not None:
        requested = num_gpus_per_machine * num_machines
        if requested > 1 and requested != env["WORLD_SIZE"]:
            raise LaunchError(
                f"torchrun started {env['WORLD_SIZE']} processes but --num-gpus "
                f"{num_gpus_per_machine} x --num-machines {num_machines} asks for {requested}; "
                "under torchrun leave --num-gpus and --num-machines at 1 (torchrun's "
                "--nproc-per-node and --nnodes decide)"
            )
        if env["WORLD_SIZE"] % env["LOCAL_WORLD_SIZE"]:
            raise LaunchError(
                f"WORLD_SIZE {env['WORLD_SIZE']} is not a multiple of LOCAL_WORLD_SIZE "
                f"{env['LOCAL_WORLD_SIZE']}: every machine must run as many processes"
            )
        return
    if num_gpus_per_machine < 1:
        raise LaunchError(f"--num-gpus must be at least 1, got {num_gpus_per_machine}")
    if num_machines < 1:
        raise LaunchError(f"--num-machines must be at least 1, got {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise LaunchError(
            f"--machine-rank must be in [0, {num_machines - 1}] for --num-machines "
            f"{num_machines}, got {machine_rank}"
        )
    if num_machines > 1 and dist_url in (None, "", "auto"):
        raise LaunchError(
            f"--num-machines {num_machines} needs --dist-url tcp://HOST:PORT, the address of "
            "machine 0 (--machine-rank 0) and a free port there, the same on every machine"
        )


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    *,
    backend: Optional[str] = None,
):
    """Run ``main_func(*args)`` in every process of the job; call it on every machine.

    Args:
        main_func: a module-level function (spawned processes import it by name).
        num_gpus_per_machine: processes per machine: one per GPU with NCCL, CPU processes
            with gloo.
        num_machines, machine_rank: as detectron2's ``--num-machines`` / ``--machine-rank``.
        dist_url: ``tcp://HOST:PORT`` of machine 0; "auto" (or None) picks a free local port
            on one machine.
        timeout: of the process group's operations.
        backend: "nccl" (CUDA, detectron2's launcher) or "gloo" (CPU processes); default
            "nccl" where CUDA is available.

    Returns:
        ``main_func``'s result where it ran in this process (one process; torchrun), else
        None.
    """
    backend = backend or default_backend()
    check_launch_args(num_gpus_per_machine, num_machines, machine_rank, dist_url, backend)
    if torchrun_env() is not None:
        return _run_from_env(main_func, args, timeout, backend)
    world_size = num_gpus_per_machine * num_machines
    if world_size == 1:
        return main_func(*args)
    if dist_url in (None, "", "auto"):
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    if backend == "nccl":
        _detectron2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
        return None
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs; prefer tcp://")
    mp.start_processes(
        _cpu_worker,
        args=(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout),
        nprocs=num_gpus_per_machine,
        join=True,
        daemon=False,
        start_method="spawn",  # as detectron2: a fresh interpreter, no forked thread pools
    )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))  # the OS picks a free port; another process could still take it
        return sock.getsockname()[1]


def _cpu_worker(
    local_rank, main_func, per_machine, num_machines, machine_rank, dist_url, args, timeout
):
    if "OMP_NUM_THREADS" not in os.environ:
        # N processes x all cores each would oversubscribe the CPU (torchrun sets 1).
        torch.set_num_threads(max(1, _cpu_count() // per_machine))
    try:
        dist.init_process_group(
            "gloo",
            init_method=dist_url,
            world_size=per_machine * num_machines,
            rank=machine_rank * per_machine + local_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    _run_in_group(main_func, args, per_machine, num_machines, machine_rank)


def _run_from_env(main_func, args, timeout, backend):
    env = torchrun_env()
    per_machine = env["LOCAL_WORLD_SIZE"]
    if backend == "nccl":
        if env["LOCAL_RANK"] >= torch.cuda.device_count():
            raise LaunchError(
                f"LOCAL_RANK {env['LOCAL_RANK']} but only {torch.cuda.device_count()} CUDA "
                "GPU(s) here: start at most that many processes per machine (--nproc-per-node)"
            )
        torch.cuda.set_device(env["LOCAL_RANK"])  # before the barrier, which names the device
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    return _run_in_group(
        main_func,
        args,
        per_machine,
        env["WORLD_SIZE"] // per_machine,
        env["RANK"] // per_machine,
    )


def _run_in_group(main_func, args, per_machine, num_machines, machine_rank):
    try:
        # Every process creates every machine's group (new_group is collective), keeps its own.
        for i in range(num_machines):
            group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
            if i == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
        # A first barrier avoids a timeout later (maskrcnn-benchmark#172, as detectron2 does).
        comm.synchronize()
        return main_func(*args)
    finally:
        _shutdown()


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()  # its group belonged to the destroyed one


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
