"""Several processes on the CPU (gloo) through seg_plugins.engine.launch: training keeps the
ranks' weights identical, the gathered evaluation equals a 1-process one, torchrun's
environment is honoured, tools/train_net.py --num-gpus 2 runs, impossible flags fail."""

import json
import math
import os
import socket
import subprocess
import sys
from datetime import timedelta

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from PIL import Image

from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer
from seg_plugins.engine.cli import argument_parser, main
from seg_plugins.engine.launch import LaunchError, check_launch_args, launch
from tests.modeling.seg_model_checks import tiny_model_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
PREFIX = "dist_shapes"
SHAPES = {"num_train": 16, "num_val": 8, "image_size": 64, "seed": 1}
TIMEOUT = timedelta(seconds=120)  # of the process group: a broken test fails, never hangs
# fork for the torchrun-style test: the children inherit the imported detectron2 (0.2 s).
FORK = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    """A 16 + 8 image shapes set, generated here once (the workers only register it)."""
    root = str(tmp_path_factory.mktemp("datasets"))
    for name in register_shapes(PREFIX, root=root, **SHAPES):
        DatasetCatalog.get(name)  # generates the files
    return root


def _train_cfg(output_dir: str):
    return tiny_model_cfg(
        "UNet",
        *["MODEL.UNET.NORM", "SyncBN"],  # on CPU processes: detectron2's NaiveSyncBatchNorm
        *["DATASETS.TRAIN", (f"{PREFIX}_train",), "DATASETS.TEST", (f"{PREFIX}_val",)],
        *["SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 3, "SOLVER.WARMUP_ITERS", 1],
        *["TEST.EVAL_PERIOD", 0, "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", output_dir],
    )


def _train_worker(root: str, tmp: str) -> None:
    """One rank: register the data (spawned processes start empty), train, save."""
    register_shapes(PREFIX, root=root, **SHAPES)
    rank = comm.get_rank()
    trainer = Trainer(_train_cfg(os.path.join(tmp, "out2")))
    trainer.train()  # 3 iterations, then detectron2's EvalHook evaluates DATASETS.TEST
    model = trainer.model.module  # DistributedDataParallel on CPU: the compat repair
    info = {
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "backend": dist.get_backend(),
        "naive_sync_bn": sum(isinstance(m, NaiveSyncBatchNorm) for m in model.modules()),
        "results": trainer._last_eval_results if rank == 0 else None,
    }
    torch.save(model.state_dict(), os.path.join(tmp, f"rank{rank}.pth"))
    with open(os.path.join(tmp, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)


def _same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_two_cpu_processes_train_alike_and_evaluate_as_one(shapes_root, tmp_path):
    launch(_train_worker, 2, dist_url="auto", args=(shapes_root, str(tmp_path)), timeout=TIMEOUT)

    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(infos):
        assert (info["world_size"], info["local_size"], info["local_rank"]) == (2, 2, rank)
        assert info["backend"] == "gloo" and info["naive_sync_bn"] > 0
    states = [torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in (0, 1)]
    assert list(states[0]) == list(states[1])
    for key, value in states[0].items():  # parameters and the synchronised BN statistics
        assert torch.equal(value, states[1][key]), key

    # The same weights evaluated in this (single) process.
    cfg = _train_cfg(str(tmp_path / "out1"))
    model = Trainer.build_model(cfg)
    model.load_state_dict(states[0])
    one = Trainer.test(cfg, model)["sem_seg"]
    two = infos[0]["results"]["sem_seg"]
    assert list(two) == list(one) and all(_same(two[k], v) for k, v in one.items())
    name = f"{PREFIX}_val"
    conf = [
        json.loads((tmp_path / out / "inference" / name / "sem_seg_evaluation.json").read_text())
        for out in ("out1", "out2")
    ]
    assert conf[0]["confusion_matrix"] == conf[1]["confusion_matrix"]  # both shares gathered
    assert (tmp_path / "out2" / "model_final.pth").is_file()  # written by rank 0


# ----------------------------------------------------------------------------- torchrun


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_main(out_dir: str) -> int:
    rank = comm.get_rank()
    gathered = comm.all_gather(rank)
    info = {
        "rank": rank,
        "world_size": comm.get_world_size(),
        "local": [comm.get_local_rank(), comm.get_local_size()],
        "backend": dist.get_backend(),
        "gathered": gathered,
    }
    with open(os.path.join(out_dir, f"env{rank}.json"), "w") as f:
        json.dump(info, f)
    return 10 + rank


def _torchrun_like(local_rank: int, port: int, out_dir: str) -> None:
    """What torchrun --nnodes 2 --nproc-per-node 1 gives each process: the environment."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(local_rank),
        WORLD_SIZE="2",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",  # one process per "machine": two local groups
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    result = launch(_env_main, 1, args=(out_dir,), timeout=TIMEOUT)  # default --num-gpus 1
    assert result == 10 + local_rank  # main_func ran here, not in a new process
    assert not dist.is_initialized()  # the group is closed afterwards


def test_torchrun_environment_initialises_the_group(tmp_path):
    mp.start_processes(
        _torchrun_like, args=(_free_port(), str(tmp_path)), nprocs=2, start_method=FORK
    )
    for rank in (0, 1):
        info = json.loads((tmp_path / f"env{rank}.json").read_text())
        assert info == {
            "rank": rank,
            "world_size": 2,
            "local": [0, 1],
            "backend": "gloo",
            "gathered": [0, 1],
        }


# ----------------------------------------------------------------------------- train_net


def _write_spec(path, root: str) -> None:
    folders = {
        split: os.path.relpath(MetadataCatalog.get(f"{PREFIX}_{split}").image_root, root)
        for split in ("train", "val")
    }
    splits = "".join(
        f"  {split}: {{images: {d}, masks: {os.path.join(os.path.dirname(d), 'sem_seg')}}}\n"
        for split, d in folders.items()
    )
    path.write_text(
        "name: dist_e2e\nformat: sem_seg_folder\n"
        "classes: [background, circle, square, triangle]\n"
        f"root: {root}\nsplits:\n{splits}"
    )


@pytest.mark.slow
def test_train_net_num_gpus_2_on_cpu(shapes_root, tmp_path):
    spec = tmp_path / "spec.yaml"
    _write_spec(spec, shapes_root)
    out = tmp_path / "out"
    opts = {
        "DATASETS.SPECS": f"['{spec}']",
        "DATASETS.TRAIN": "('dist_e2e_train',)",
        "DATASETS.TEST": "('dist_e2e_val',)",
        "MODEL.UNET.BASE_CHANNELS": 4,
        "MODEL.UNET.DEPTH": 3,
        "SOLVER.IMS_PER_BATCH": 4,
        "SOLVER.MAX_ITER": 2,
        "SOLVER.WARMUP_ITERS": 1,
        "DATALOADER.NUM_WORKERS": 0,
        "OUTPUT_DIR": out,
    }
    argv = ["--config-file", UNET_CFG, "--num-gpus", "2", "--dist-url", "auto"]
    argv += [str(x) for kv in opts.items() for x in kv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "World size: 2" in (out / "log.txt").read_text()
    assert (out / "log.txt.rank1").is_file()  # the other rank logs apart, writes nothing else
    assert (out / "model_final.pth").is_file()
    report = out / "inference" / "dist_e2e_val" / "sem_seg_evaluation.json"
    report = json.loads(report.read_text())
    labelled = sum(
        int((np.asarray(Image.open(r["sem_seg_file_name"])) != 255).sum())
        for r in DatasetCatalog.get(f"{PREFIX}_val")
    )
    assert sum(map(sum, report["confusion_matrix"])) == labelled  # both ranks' images counted


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "launch_args, flag",
    [
        ((0, 1, 0, None), "--num-gpus"),
        ((2, 2, 2, "tcp://10.0.0.1:29500"), "--machine-rank"),
        ((2, 2, -1, "tcp://10.0.0.1:29500"), "--machine-rank"),
        ((2, 2, 1, None), "--dist-url"),
        ((2, 2, 1, "auto"), "--dist-url"),
    ],
)
def test_impossible_launch_flags_name_the_flag(launch_args, flag):
    with pytest.raises(LaunchError, match=flag):
        check_launch_args(*launch_args)
    with pytest.raises(LaunchError, match=flag):  # before any process starts
        launch(_env_main, *launch_args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: nccl is possible")
def test_nccl_without_cuda_is_refused():
    with pytest.raises(LaunchError, match="CUDA"):
        check_launch_args(2, backend="nccl")


def test_partial_or_inconsistent_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR"):
        launch(_env_main, 1)
    env = {"LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 2, "MASTER_ADDR": "x", "MASTER_PORT": 1}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    with pytest.raises(LaunchError, match="torchrun started 2 processes but --num-gpus 3"):
        check_launch_args(3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(LaunchError, match="not a multiple of LOCAL_WORLD_SIZE"):
        check_launch_args(1)


def _exit_message(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seg_plugins: error: ") and "\n" not in err
    return err


def test_train_net_refuses_impossible_flags(capsys, monkeypatch):
    base = ["--config-file", UNET_CFG]
    err = _exit_message([*base, "--num-machines", "2", "--machine-rank", "1"], capsys)
    assert "--num-machines 2 needs --dist-url tcp://HOST:PORT" in err
    err = _exit_message([*base, "--num-machines", "2", "--machine-rank", "2"], capsys)
    assert "--machine-rank must be in [0, 1]" in err
    err = _exit_message([*base, "--num-processes", "3", "SOLVER.IMS_PER_BATCH", "8"], capsys)
    assert "SOLVER.IMS_PER_BATCH 8 is the total over all 3 processes" in err
    assert "a multiple of 3, e.g. 6" in err
    # One CUDA GPU for --num-gpus 2: the existing check, unchanged on GPUs.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    err = _exit_message([*base, "--num-gpus", "2", "MODEL.DEVICE", "cuda"], capsys)
    assert "--num-gpus 2 needs 2 CUDA GPUs, found 1" in err


def test_num_processes_is_an_alias_of_num_gpus():
    parser = argument_parser()
    assert parser.parse_args(["--num-processes", "3"]).num_gpus == 3
    args = parser.parse_args([])
    assert args.num_gpus == 1 and args.dist_url is None  # main() fills detectron2's default
