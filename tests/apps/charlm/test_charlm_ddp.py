"""Data parallelism: 2 processes on loopback (gloo) = one process on the same global batch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from lstmkit.apps.charlm.batching import sequential_batches
from lstmkit.apps.charlm.config import CharLMConfig
from lstmkit.apps.charlm.model import CharLM
from lstmkit.apps.charlm.train import Dist, make_optimizer, on_main, train_step
from lstmkit.utils.checkpoint import load_checkpoint
from lstmkit.utils.runs import fresh_run_dir, make_out_dir

REPO = Path(__file__).resolve().parents[3]
CFG = dict(embedding_size=6, hidden_size=12, num_layers=2, output_dropout=0.0, optimizer="sgd", lr=0.5,
           backend="reference")
V, B, T = 11, 4, 6


def run_steps(rank: int, world: int, ids: torch.Tensor, net_of=lambda m: m):
    """Two sequential TBPTT steps with the state carried; -> (first step's grads, final params)."""
    torch.manual_seed(0)
    cfg = CharLMConfig(**CFG)
    model = CharLM(V, cfg)
    net = net_of(model)
    optimizer = make_optimizer(model, cfg)
    state, grads = None, None
    for x, y in list(sequential_batches(ids, B, T, np.random.default_rng(0), rank, world))[:2]:
        _, state = train_step(net, optimizer, x.T.contiguous(), y.T.contiguous(), state, clip=0.0)
        state = tuple(s.detach() for s in state)
        if grads is None:
            grads = {f"grad.{n}": p.grad.clone() for n, p in model.named_parameters()}
    return grads, {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, world: int, init: str, ids: torch.Tensor, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        from torch.nn.parallel import DistributedDataParallel
        # DDP on a group of its own and the default group destroyed whole at the end, as
        # `lstmkit train` does (lstmkit.apps.charlm.train says why)
        grads, params = run_steps(rank, world, ids,
                                  lambda m: DistributedDataParallel(m, process_group=dist.new_group()))
        if rank == 0:
            save_file({**grads, **params}, out)
        # leave together, as `lstmkit train` does: a rank that tears gloo down while the other
        # still works can abort at exit ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gradients_equal_single_process(tmp_path):
    ids = torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(1))
    out = str(tmp_path / "ddp.safetensors")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", ids, out), nprocs=2, join=True)
    got = load_file(out)
    grads, params = run_steps(0, 1, ids)
    assert grads and params
    for name, want in {**grads, **params}.items():
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6, msg=name)


def _run_dir_worker(rank: int, world: int, init: str, cwd: str) -> None:
    torch.set_num_threads(1)
    os.chdir(cwd)
    real, now = time.strftime, time.localtime(time.time() + 86400 * rank)
    time.strftime = lambda fmt, t=None: real(fmt, now)  # rank 1's clock a day ahead: another name
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        d = Dist(rank, world)
        made = on_main(lambda: fresh_run_dir("charlm"), d)
        try:
            on_main(lambda: make_out_dir(Path("afile", "run")), d)
            refused = None
        except ValueError as e:
            refused = str(e)

        def name_too_long():  # an OSError outside make_out_dir, as Path.exists can raise
            raise OSError(36, "File name too long")

        try:
            on_main(name_too_long, d)
            os_error = None
        except OSError as e:
            os_error = str(e)
        Path(f"rank{rank}.json").write_text(json.dumps([str(made), refused, os_error]))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_the_run_directory_rank_0_made(tmp_path):
    """Each rank named the default run directory by its own clock, and only rank 0 made it; a
    directory rank 0 could not make is refused on every rank, not on rank 0 alone, with its error's
    kind (the CLI reports ValueError, TypeError and OSError in one line)."""
    (tmp_path / "afile").write_text("")
    mp.spawn(_run_dir_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    made, refused, os_error = results[0]
    assert [str(p.relative_to(tmp_path)) for p in (tmp_path / "runs").iterdir()] == [made]
    assert refused == "--out: cannot create directory 'afile/run' (Not a directory)"
    assert os_error == "[Errno 36] File name too long"  # rank 1 died of gloo's closed connection


@pytest.mark.slow
def test_torchrun_train_matches_one_process(tiny_text, tmp_path):
    """`lstmkit train` under torchrun: rank 0 alone writes, and it learns what one process learns."""
    args = ["--text", str(tiny_text), "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4",
            "--num-steps", "8", "--epochs", "1", "--max-steps", "25", "--max-time", "0", "--output-dropout", "0",
            "--sample-length", "10", "--no-progress", "--backend", "reference"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "lstmkit.cli.main", "train", "--out", str(tmp_path / "two"), *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-12000:]  # a rank's own error comes before torchrun's ~2.5k summary
    one = subprocess.run([sys.executable, "-m", "lstmkit.cli.main", "train", "--out", str(tmp_path / "one"), *args],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    lines = two.stdout.strip().splitlines()
    assert lines[-1].startswith("validation: perplexity")
    assert sum(line.startswith("run directory:") for line in lines) == 1  # rank 0 alone speaks
    assert "2 process(es)" in two.stdout
    a = load_checkpoint(tmp_path / "two" / "checkpoint.safetensors")
    b = load_checkpoint(tmp_path / "one" / "checkpoint.safetensors")
    assert a["world"] == 2 and b["world"] == 1 and len(a["rng"]) == 2
    assert a["progress"]["step"] == b["progress"]["step"] == 25
    for name, p in b["model"].items():
        torch.testing.assert_close(a["model"][name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_torchrun_refuses_an_uneven_global_batch_before_writing(tiny_text, tmp_path):
    """--batch-size 3 over 2 processes was refused only once the first epoch began, after the run
    directory, config.json and vocab.json had been written; now before anything is."""
    out = tmp_path / "odd"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "lstmkit.cli.main", "train", "--text", str(tiny_text), "--batch-size", "3",
                        "--num-steps", "8", "--no-progress", "--out", str(out)],
                       cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert "error: --batch-size: expected a multiple of the number of processes (2), got 3" in r.stdout + r.stderr
    assert "run directory:" not in r.stdout
    assert not out.exists()
