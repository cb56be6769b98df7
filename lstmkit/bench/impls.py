"""The implementations `lstmkit bench` compares, and the cases (shape, weights, inputs) they run.

Every implementation is built for one `Case` into a `Runner`: a function x -> y over the whole
sequence and the leaf tensors whose gradients a training step computes. All LSTM-cell runners
of a case start from the same `torch.nn.LSTM` weights, so they compute the same numbers; the
tests check that, the benchmark only times them.

Names:
  loop-8mm              the tutorial form: `lstmkit.cells.lstm_cell_plain` per step, 8 matmuls
  loop-fused            `lstmkit.cells.lstm_cell` per step: one [4H, I] and one [4H, H] matmul
  loop-precomp          the input product of all T steps as one GEMM, then per step one addmm
                        and torch pointwise ops (iterating `xw.unbind(0)`, not `xw[t]`)
  loop-precomp-jit      the same function under TorchScript
  loop-precomp-compile  the same loop with its step under `torch.compile` (only when asked:
                        a cold compile takes ~17 s, and seconds per new shape)
  nn.LSTM               torch.nn.LSTM as it runs by default (oneDNN on CPU): the baseline
  nn.LSTM-no-onednn     torch.nn.LSTM under `torch.backends.mkldnn.flags(enabled=False)`
  lstmkit-<backend>[-<cell>]  `lstmkit.LSTM(backend=<backend>, cell=<cell>)`, for every backend
                        in `lstmkit.kernels.BACKENDS` that loads on CPU, standard cell and variants
  lstmkit-numba-compile `lstmkit.LSTM(backend="numba")` under `torch.compile(fullgraph=True)`, its
                        kernels operators of the graph (only when asked, as loop-precomp-compile)
The loops implement the standard cell on a plain (T, B, I) batch; nn.LSTM and the lstmkit
backends also run the PackedSequence and proj_size shapes.

On a GPU (`lstmkit bench --device cuda`) the set is `gpu_registry`'s:
  nn.LSTM               torch.nn.LSTM on the GPU (cuDNN): the baseline
  lstmkit-triton[-<cell>]  `lstmkit.LSTM(backend="triton", cell=<cell>)`: CUDA graphs on, and the
                        persistent kernel for inference at B <= 16
  lstmkit-triton-per-step  the standard cell with the persistent kernel off (inference only: a
                        training step never uses it)
  lstmkit-triton-no-graphs the standard cell with CUDA graphs and the persistent kernel off
  cpu:nn.LSTM, cpu:lstmkit-<backend>  the CPU implementations on the same case held in host
                        memory (no transfer timed), for scale
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

import lstmkit
from lstmkit.cells import LSTM_CELLS, lstm_cell, lstm_cell_plain, split_gates
from lstmkit.kernels import BACKENDS, BackendUnavailable, resolve_backend

BASELINE = "nn.LSTM"
VARIANTS = tuple(c for c in LSTM_CELLS if c != "lstm")  # peephole, cifg, layernorm


# --- cases -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """One benchmark shape: (T, B, I) -> H, optionally as a PackedSequence or with proj_size P.

    Written and parsed as comma-separated tokens, e.g. `T100,B32,I128,H256`,
    `T100,B32,I128,H256,packed` (random sorted lengths, the longest T) or `T100,B32,I128,H256,P128`.
    """

    T: int
    B: int
    I: int  # noqa: E741 (the equations' name)
    H: int
    packed: bool = False
    P: int = 0

    def __post_init__(self) -> None:
        for name in ("T", "B", "I", "H"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"shape {name}: expected a positive int, got {v!r}")
        if not 0 <= self.P < self.H:
            raise ValueError(f"shape P (proj_size): expected 0 <= P < H={self.H}, got {self.P}")

    @property
    def plain(self) -> bool:
        return not self.packed and not self.P

    @property
    def label(self) -> str:
        s = f"T{self.T},B{self.B},I{self.I},H{self.H}"
        return s + (",packed" if self.packed else "") + (f",P{self.P}" if self.P else "")

    @classmethod
    def parse(cls, text: str) -> Shape:
        fields: dict[str, object] = {}
        for token in text.replace(" ", "").split(","):
            if token == "packed":
                fields["packed"] = True
                continue
            m = re.fullmatch(r"([TBIHP])=?(\d+)", token)
            if not m or m.group(1) in fields:
                raise ValueError(f"--shapes: expected tokens like T100,B32,I128,H256[,packed][,P128], "
                                 f"got {text!r}")
            fields[m.group(1)] = int(m.group(2))
        missing = [k for k in "TBIH" if k not in fields]
        if missing:
            raise ValueError(f"--shapes: {text!r} lacks {', '.join(missing)} (e.g. T100,B32,I128,H256)")
        return cls(**fields)  # type: ignore[arg-type]


@dataclass
class Case:
    """A shape with its weights and inputs, shared by every implementation."""

    shape: Shape
    weights: dict[str, Tensor]  # a torch.nn.LSTM(I, H, proj_size=P) state dict
    x: Tensor  # (T, B, I), or the PackedSequence data (N, I)
    batch_sizes: Tensor | None  # PackedSequence batch sizes (T,), or None
    grad_out: Tensor  # a fixed gradient of the output, shaped like y
    lengths: list[int] = field(default_factory=list)


def make_case(shape: Shape, seed: int = 0, device: str = "cpu") -> Case:
    """The case of `shape` for `seed`, drawn on the CPU (the same numbers on any device), on `device`."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(shape.I, shape.H, proj_size=shape.P)
    weights = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    if shape.packed:
        lengths = sorted(torch.randint(1, shape.T + 1, (shape.B,), generator=g).tolist(), reverse=True)
        lengths[0] = shape.T
        batch_sizes = torch.tensor([sum(L > t for L in lengths) for t in range(shape.T)], dtype=torch.int64)
        x = torch.randn(sum(lengths), shape.I, generator=g)
    else:
        lengths, batch_sizes = [shape.T] * shape.B, None
        x = torch.randn(shape.T, shape.B, shape.I, generator=g)
    out = shape.P or shape.H
    grad_out = torch.randn(*x.shape[:-1], out, generator=g)
    weights = {k: v.to(device) for k, v in weights.items()}
    return Case(shape, weights, x.to(device), batch_sizes, grad_out.to(device), lengths)


# --- runners ---------------------------------------------------------------------------------

@dataclass
class Runner:
    forward: Callable[[Tensor], Tensor]  # x -> y (T, B, P or H), or the packed output's data
    params: list[Tensor]  # leaves that get a gradient in a training step
    context: Callable[[], ContextManager] = contextlib.nullcontext  # around forward and backward


@dataclass(frozen=True)
class Impl:
    name: str
    description: str
    build: Callable[[Case], Runner]
    cell: str = "lstm"
    plain_only: bool = True  # no PackedSequence, no proj_size
    modes: tuple[str, ...] = ("fwd", "fwd+bwd")  # the modes it is timed in
    device: str = ""  # where it runs: "" the run's device, "cpu" host memory in a GPU run

    def supports(self, shape: Shape) -> bool:
        return shape.plain or not self.plain_only


def _leaves(case: Case, *names: str) -> list[Tensor]:
    return [case.weights[f"{n}_l0"].clone().requires_grad_() for n in names]


def _build_loop_8mm(case: Case) -> Runner:
    w = case.weights
    gates = split_gates(w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"] + w["bias_hh_l0"])
    p = {k: v.clone().requires_grad_() for k, v in gates.items()}  # 12 leaves, as tutorials keep them
    H = case.shape.H

    def forward(x: Tensor) -> Tensor:
        h = c = x.new_zeros(x.shape[1], H)
        ys = []
        for x_t in x.unbind(0):
            h, c = lstm_cell_plain(x_t, (h, c), **p)
            ys.append(h)
        return torch.stack(ys)

    return Runner(forward, list(p.values()))


def _build_loop_fused(case: Case) -> Runner:
    params = _leaves(case, "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    H = case.shape.H

    def forward(x: Tensor) -> Tensor:
        h = c = x.new_zeros(x.shape[1], H)
        ys = []
        for x_t in x.unbind(0):
            h, c = lstm_cell(x_t, (h, c), *params)
            ys.append(h)
        return torch.stack(ys)

    return Runner(forward, params)


def precomputed_step(xw_t: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor) -> tuple[Tensor, Tensor]:
    """One step given the precomputed input part xw_t = W x_t + b (B, 4H); w_hh_t: (H, 4H)."""
    gates = torch.addmm(xw_t, h, w_hh_t)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def precomputed_input_loop(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                           bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """LSTM over (T, B, I) with the input product of all steps as one GEMM (TorchScript-able)."""
    T, B, I = x.shape
    xw = torch.addmm(bias_ih + bias_hh, x.reshape(T * B, I), weight_ih.t()).view(T, B, -1)  # (T, B, 4H)
    w_hh_t = weight_hh.t()  # (H, 4H)
    ys: list[Tensor] = []
    for xw_t in xw.unbind(0):  # unbind: xw[t] would make autograd build T zero buffers
        h, c = precomputed_step(xw_t, h, c, w_hh_t)
        ys.append(h)
    return torch.stack(ys)


@functools.cache
def _scripted_loop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; it is measured as it is
        return torch.jit.script(precomputed_input_loop)


@functools.cache
def _compiled_step():
    return torch.compile(precomputed_step, dynamic=False)


def _build_precomputed(loop: Callable[..., Tensor]) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        params = _leaves(case, "weight_ih", "weight_hh", "bias_ih", "bias_hh")
        H = case.shape.H

        def forward(x: Tensor) -> Tensor:
            h = x.new_zeros(x.shape[1], H)
            return loop(x, h, h, *params)

        return Runner(forward, params)
    return build


def _compiled_loop(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                   bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """precomputed_input_loop with its step compiled (a whole-loop compile would unroll T steps)."""
    T, B, I = x.shape
    xw = torch.addmm(bias_ih + bias_hh, x.reshape(T * B, I), weight_ih.t()).view(T, B, -1)
    step, w_hh_t, ys = _compiled_step(), weight_hh.t(), []
    for xw_t in xw.unbind(0):
        h, c = step(xw_t, h, c, w_hh_t)
        ys.append(h)
    return torch.stack(ys)


def _module_runner(case: Case, module: torch.nn.Module,
                   context: Callable[[], ContextManager] = contextlib.nullcontext) -> Runner:
    batch_sizes = case.batch_sizes

    def forward(x: Tensor) -> Tensor:
        if batch_sizes is None:
            return module(x)[0]
        return module(PackedSequence(x, batch_sizes))[0].data

    return Runner(forward, list(module.parameters()), context)


@contextlib.contextmanager
def _onednn_off():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flags() warns about TF32 on Intel GPUs each time
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _build_torch(onednn: bool) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        s = case.shape
        module = torch.nn.LSTM(s.I, s.H, proj_size=s.P).to(case.x.device)
        module.load_state_dict(case.weights)
        return _module_runner(case, module, contextlib.nullcontext if onednn else _onednn_off)
    return build


def _build_lstmkit(backend: str, cell: str, context: Callable[[], ContextManager] = contextlib.nullcontext,
                   compiled: bool = False) -> Callable[[Case], Runner]:
    def build(case: Case) -> Runner:
        s = case.shape
        torch.manual_seed(1)
        module = lstmkit.LSTM(s.I, s.H, proj_size=s.P, cell=cell, backend=backend).to(case.x.device)
        if cell == "lstm":
            module.load_state_dict(case.weights)
        runner = _module_runner(case, module, context)
        if compiled:
            runner.forward = torch.compile(runner.forward, fullgraph=True, dynamic=False)
        return runner
    return build


def _backend_unavailable(backend: str, cell: str, device: str = "cpu") -> str | None:
    """Why `lstmkit.LSTM(backend=backend, cell=cell)` cannot run on `device` here, or None."""
    try:
        resolve_backend(backend, device, cell)
    except (BackendUnavailable, ValueError, ImportError) as e:
        return str(e)
    return None


def _lstmkit_impls(backend: str, device: str = "cpu") -> tuple[list[Impl], dict[str, str]]:
    """lstmkit-<backend>[-<cell>] for the standard cell and each variant that runs on `device`,
    and {name: why not} for those that cannot."""
    impls: list[Impl] = []
    unavailable: dict[str, str] = {}
    for cell in ("lstm", *VARIANTS):
        name = f"lstmkit-{backend}" + ("" if cell == "lstm" else f"-{cell}")
        why = _backend_unavailable(backend, cell, device)
        if why:
            unavailable[name] = why
            continue
        impls.append(Impl(name, f"lstmkit.LSTM(backend={backend!r}, cell={cell!r})",
                          _build_lstmkit(backend, cell), cell=cell, plain_only=cell != "lstm"))
    return impls, unavailable


def _triton_settings(**flags) -> Callable[[], ContextManager]:
    def context() -> ContextManager:
        from lstmkit.kernels import lstm_triton

        return lstm_triton.settings(**flags)
    return context


def gpu_registry() -> tuple[list[Impl], dict[str, str]]:
    """The implementations of a GPU run (see the module docstring), and {name: why not} for the rest."""
    triton, unavailable = _lstmkit_impls("triton", "cuda")
    impls = [Impl(BASELINE, "torch.nn.LSTM on the GPU (cuDNN)", _build_torch(True), plain_only=False), *triton]
    if "lstmkit-triton" not in unavailable:
        impls.append(Impl("lstmkit-triton-per-step", "backend='triton', persistent kernel off",
                          _build_lstmkit("triton", "lstm", _triton_settings(persistent=False)), modes=("fwd",)))
        impls.append(Impl("lstmkit-triton-no-graphs", "backend='triton', CUDA graphs and persistent kernel off",
                          _build_lstmkit("triton", "lstm", _triton_settings(graphs=False, persistent=False))))
    impls.append(Impl("cpu:nn.LSTM", "torch.nn.LSTM on the CPU (oneDNN)", _build_torch(True), plain_only=False,
                      device="cpu"))
    for backend in BACKENDS:
        if backend in ("reference", "triton"):
            continue
        name = f"cpu:lstmkit-{backend}"
        why = _backend_unavailable(backend, "lstm")
        if why:
            unavailable[name] = why
        else:
            impls.append(Impl(name, f"lstmkit.LSTM(backend={backend!r}) on the CPU", _build_lstmkit(backend, "lstm"),
                              plain_only=False, device="cpu"))
    return impls, unavailable


def registry(compile: bool = False) -> tuple[list[Impl], dict[str, str]]:
    """Every implementation that can run here, in display order, and {name: why not} for the rest."""
    impls = [
        Impl("loop-8mm", "tutorial loop: lstm_cell_plain per step, 8 matmuls", _build_loop_8mm),
        Impl("loop-fused", "loop of lstm_cell: 2 matmuls per step", _build_loop_fused),
        Impl("loop-precomp", "input GEMM for all T, then addmm + torch pointwise per step",
             _build_precomputed(precomputed_input_loop)),
        Impl("loop-precomp-jit", "loop-precomp under TorchScript", _build_precomputed(
            lambda *a: _scripted_loop()(*a))),
    ]
    unavailable: dict[str, str] = {}
    if compile:
        impls.append(Impl("loop-precomp-compile", "loop-precomp with its step under torch.compile",
                          _build_precomputed(_compiled_loop)))
    else:
        unavailable["loop-precomp-compile"] = "off by default (cold compile ~17 s): pass --compile"
    impls += [
        Impl(BASELINE, "torch.nn.LSTM, oneDNN on (default)", _build_torch(True), plain_only=False),
        Impl("nn.LSTM-no-onednn", "torch.nn.LSTM, oneDNN off", _build_torch(False), plain_only=False),
    ]
    for backend in BACKENDS:
        found, missing = _lstmkit_impls(backend)
        impls += found
        unavailable.update(missing)
    name = "lstmkit-numba-compile"
    if not compile:
        unavailable[name] = "off by default (a cold compile takes seconds per shape): pass --compile"
    elif why := _backend_unavailable("numba", "lstm"):
        unavailable[name] = why
    else:
        impls.append(Impl(name, "lstmkit.LSTM(backend='numba') under torch.compile(fullgraph=True)",
                          _build_lstmkit("numba", "lstm", compiled=True)))
    return impls, unavailable
