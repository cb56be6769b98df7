"""backend="triton" against the reference backend.

Three groups:
* plain tests (any machine): registration, and the fallback when triton is missing;
* `interp_*` tests: the Triton kernels in Triton's interpreter on CPU tensors. TRITON_INTERPRET
  must be set before triton is imported, so `test_interpreter_suite` runs them in a child
  pytest process with the variable set; in the parent process they skip;
* `gpu_*` tests: on a CUDA device (they skip without one), including the CUDA-graph replay
  and the persistent kernel's multi-program grid barrier, which the interpreter cannot run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit.cells import CELLS as SPECS
from lstmkit.cells.sequence import reference_layer
from lstmkit.kernels import AUTO_PREFERENCE, BACKENDS

CELLS = ("lstm", "peephole", "cifg", "layernorm")
CHILD = os.environ.get("LSTMKIT_TRITON_INTERP_CHILD") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()

interp = pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process (test_interpreter_suite)")
gpu = pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON and not CHILD), reason="needs a CUDA device and triton")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _perturbed(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Random values for every parameter (LN gains/biases and peepholes included)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module


def _layer_case(cell, T, B, I, H, proj=0, packed=None, reverse=False, dtype=torch.float64, device="cpu", seed=0,
                scale=0.3):
    torch.manual_seed(seed)
    m = _perturbed(lstmkit.LSTM(I, H, cell=cell, proj_size=proj, dtype=dtype, backend="reference"), scale).to(device)
    params = m.layer_params(0, 0)
    P = proj or H
    x = torch.randn(T, B, I, dtype=dtype, device=device, requires_grad=True)
    h0 = torch.randn(B, P, dtype=dtype, device=device, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, device=device, requires_grad=True)
    bs = torch.tensor(packed) if packed is not None else None
    return SPECS[cell], x, (h0, c0), params, bs, reverse


def _run_with_grads(fn, spec, x, state, params, bs, reverse, seed=1):
    y, (h, c) = fn(spec, x, state, params, bs, reverse)
    g = torch.Generator().manual_seed(seed)
    gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=torch.float64).to(t) for t in (y, h, c))
    if bs is not None:  # padding outputs are constants: their incoming gradient is irrelevant
        T, B = y.shape[:2]
        gy = gy * (torch.arange(B)[None, :] < bs[:, None]).unsqueeze(-1).to(gy)
    ins = [x, *state, *params.values()]
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum() + (c * gc).sum(), ins)
    names = ["y", "h", "c", "dx", "dh0", "dc0", *("d" + n for n in params)]
    return dict(zip(names, (y, h, c, *grads)))


def _assert_close(got: dict, want: dict, rtol: float, atol: float) -> None:
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


def _triton_layer():
    from lstmkit.kernels import lstm_triton
    return lstm_triton.layer


# --------------------------------------------------------------------------------------
# any machine
# --------------------------------------------------------------------------------------

def test_triton_backend_is_registered():
    assert BACKENDS["triton"] == "lstmkit.kernels.lstm_triton"
    assert AUTO_PREFERENCE["cuda"] == ("triton",)


def test_without_triton_auto_falls_back_and_explicit_raises():
    """With triton unimportable, importing the backend raises ImportError; "auto" on CUDA falls
    back to the reference with a warning, backend="triton" raises BackendUnavailable."""
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["triton"] = None
        try:
            import lstmkit.kernels.lstm_triton
        except ImportError:
            pass
        else:
            raise SystemExit("import did not fail")
        from lstmkit.kernels import BackendUnavailable, resolve_backend
        from lstmkit.kernels.reference import layer as ref
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert resolve_backend("auto", "cuda", "lstm") is ref
        assert any("triton" in str(x.message) for x in w), [str(x.message) for x in w]
        try:
            resolve_backend("triton", "cuda", "lstm")
        except BackendUnavailable:
            print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_settings_turn_flags_on_and_off_and_restore_them():
    from lstmkit.kernels import lstm_triton as lt

    before = lt.USE_CUDA_GRAPHS, lt.USE_PERSISTENT
    with lt.settings(graphs=False):
        assert lt.USE_CUDA_GRAPHS is False and lt.USE_PERSISTENT == before[1]
        with lt.settings(persistent=False):
            assert lt.USE_PERSISTENT is False
        assert lt.USE_PERSISTENT == before[1]
    with pytest.raises(RuntimeError), lt.settings(graphs=False, persistent=False):
        raise RuntimeError("restored even on an error")
    assert (lt.USE_CUDA_GRAPHS, lt.USE_PERSISTENT) == before
    with lt.settings(persistent_warps=8, persistent_split=2):
        assert (lt.PERSISTENT_WARPS, lt.PERSISTENT_SPLIT) == (8, 2)
    assert (lt.PERSISTENT_WARPS, lt.PERSISTENT_SPLIT) == (None, None)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_persistent_tuning_defaults_and_checks():
    from lstmkit.kernels import lstm_triton_persistent as pk

    assert pk.tuning(1024, 1) == pk.Tuning(warps=4, split=1, fma=False)
    assert pk.tuning(1000, 16, 8, 64) == pk.Tuning(8, 64)  # K padded to 1024: 64 chunks of 16 rows
    for kw, msg in ((dict(split=128), r"split: expected a power of 2 in \[1, 64\] \(H=1000\), got 128"),
                    (dict(split=3), "split: .* got 3"), (dict(warps=6), "warps: .* got 6"),
                    (dict(warps=64), "warps: .* got 64"), (dict(split=True), "split: .* got True"),
                    (dict(warps=2.0), "warps: .* got 2.0"), (dict(split=0), "split: .* got 0")):
        with pytest.raises(ValueError, match=msg):
            pk.tuning(1000, 4, **kw)
    with pytest.raises(ValueError, match=r"split: .*\[1, 1\] \(H=6\)"):
        pk.tuning(6, 4, split=2)
    assert pk.tuning(64, 2, fma=True) == pk.Tuning(4, 1, True)
    with pytest.raises(ValueError, match="fma: .* B <= 2 and split=1, got B=3, split=1"):
        pk.tuning(64, 3, fma=True)
    with pytest.raises(ValueError, match="fma: .* got B=1, split=2"):
        pk.tuning(64, 1, split=2, fma=True)
    with pytest.raises(TypeError, match="fma: expected a bool, got int"):
        pk.tuning(64, 1, fma=1)
    # strict=False (the global settings): what this shape cannot take gives way to the default,
    # a value no shape takes still raises
    assert pk.tuning(64, 3, 8, fma=True, strict=False) == pk.Tuning(8, 1, False)
    assert pk.tuning(6, 4, split=2, strict=False) == pk.Tuning(4, 1)
    assert pk.tuning(64, 2, split=2, strict=False) == pk.Tuning(4, 2)
    for kw in (dict(split=3), dict(warps=6), dict(split=0)):
        with pytest.raises(ValueError):
            pk.tuning(6, 4, strict=False, **kw)


@pytest.mark.skipif(CHILD or not HAS_TRITON, reason="parent process with triton installed only")
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_compile_for_an_h100(cell, monkeypatch):
    """Every Triton kernel compiles for sm_90 with no GPU here (triton carries ptxas): the
    interpreter runs the kernels' Python, not the compiler, which alone refuses, e.g., a global
    that is not a constexpr or a shape a layout cannot take. fp32 data and bf16 GEMM operands
    (autocast), each step kernel with and without a projection, each persistent launch."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lstmkit.kernels import lstm_triton as lt
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # what a GPU launch compiles with

    def compile_(fn, consts, ints, floats=(), data="*fp32", warps=4):
        sig = {a: "constexpr" if a in consts else "i32" if a in ints else "fp32" if a in floats else data
               for a in fn.arg_names}
        for k, ty in (("BS", "*i32"), ("SYNC", "*i32"), ("A", "*fp32")):  # the persistent kernel's int32
            if k in sig:  # buffers; the activations the forward saves (fp32 under half precision)
                sig[k] = ty
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                           target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
        assert k.asm["cubin"]

    cid, ng = lt._CELL_ID[cell], SPECS[cell].num_gates
    for data in ("*fp32", "*bf16"):
        for proj in (False, True):
            tile = dict(CELL=cid, NG=ng, PROJ=proj, BLOCK_B=8, BLOCK_H=64, ACC=tl.float32, I64=False)
            compile_(lt._fwd_step_kernel, {**tile, "SAVE": True}, ("n_active", "B", "H"), ("eps",), data)
            compile_(lt._bwd_step_kernel, tile, ("n_active", "B", "H"), ("eps",), data)
    if cell in pk.CELLS:
        for t in (pk.tuning(1024, 8), pk.tuning(1024, 8, 8, 4), pk.tuning(1024, 2, 32, fma=True)):
            consts = dict(CELL=cid, NG=ng, PACKED=True, REVERSE=True, BB=2 if t.fma else 16, KP=1024, U=8,
                          SPLIT=t.split, FMA=t.fma, ACC=tl.float32, PREC="tf32", ACQ=True)
            compile_(pk._persistent_lstm_kernel, consts, ("T", "B", "H", "n_prog", "spin_limit"), warps=t.warps)


@pytest.mark.skipif(CHILD or not HAS_TRITON, reason="parent process with triton installed only")
def test_kernel_offsets_are_int64_where_int32_would_wrap(monkeypatch):
    """The persistent kernel's offsets of a step in XW and Y (t*B*4H passes 2^31 at B=16, H=1024,
    T > 32768) are int64, as scalars (the offsets within a step stay int32); the step kernels'
    tile offsets are int64 in the variant for gate slices of 2^31 elements or more only. Read
    from the TTIR for sm_90 (no practical run: the tensors would take tens of GB)."""
    import re

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lstmkit.kernels import lstm_triton as lt
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")

    def ttir(fn, consts, ints, floats=()):
        sig = {a: "constexpr" if a in consts else "i32" if a in ints else "fp32" if a in floats else "*fp32"
               for a in fn.arg_names}
        sig.update({k: "*i32" for k in ("BS", "SYNC") if k in sig})
        return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                              target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ttir"]

    consts = dict(CELL=0, NG=4, PACKED=True, REVERSE=True, BB=16, KP=16, U=4, SPLIT=1, FMA=False,
                  ACC=tl.float32, PREC="ieee", ACQ=True)
    ir = ttir(pk._persistent_lstm_kernel, consts, ("T", "B", "H", "n_prog", "spin_limit"))
    # XW: the first step's load and each step's next one; Y: each step's store
    assert len(re.findall(r"tt\.addptr %XW, %\w+ : !tt\.ptr<f32>, i64", ir)) == 2, ir
    assert len(re.findall(r"tt\.addptr %Y, %\w+ : !tt\.ptr<f32>, i64", ir)) == 1, ir

    def cfg(B, H):
        return lt._Cfg("lstm", 2, B, 3, H, H, False, True, False, None, torch.float32, torch.float32, False, True)
    assert not lt._Launch(cfg(2 ** 13, 2 ** 16 - 1), torch.device("cpu")).const["I64"]
    assert lt._Launch(cfg(2 ** 13, 2 ** 16), torch.device("cpu")).const["I64"]  # B*4H = 2^31
    for kern, extra in ((lt._fwd_step_kernel, {"SAVE": True}), (lt._bwd_step_kernel, {})):
        for i64 in (False, True):
            tile = dict(CELL=lt._CELL_ID["layernorm"], NG=4, PROJ=False, BLOCK_B=8, BLOCK_H=64, ACC=tl.float32,
                        I64=i64, **extra)
            ir = ttir(kern, tile, ("n_active", "B", "H"), ("eps",))
            # the offset types of the (B, .) tensors' tiles: each argument's pointer, splat to the tile
            splat = dict(re.findall(r"(%\w+) = tt\.splat %([A-Z]+) : !tt\.ptr<f32> -> tensor<8x64x", ir))
            offsets = {(splat[p], ty) for p, ty in re.findall(
                r"tt\.addptr (%\w+), %\w+ : tensor<8x64x!tt\.ptr<f32>>, tensor<8x64x(i\d+)>", ir) if p in splat}
            names = {n for n, _ in offsets}
            assert len(names) >= 7 and offsets == {(n, "i64" if i64 else "i32") for n in names}, (kern, offsets)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_persistent_kernel_only_on_nvidia_gpus(monkeypatch):
    """ROCm (torch.version.hip; its GPUs are "cuda" devices too) has no ld.acquire.gpu for the
    barrier's poll: the step kernels run there. A CPU tensor never takes it through layer()."""
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setattr(pk, "_num_sms", lambda index: 132)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.version, "hip", None)
    assert pk.supported("lstm", 100, 4, 256, False, torch.float32, cuda)
    assert not pk.supported("lstm", 100, 4, 256, False, torch.float32, torch.device("cpu"))
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    assert not pk.supported("lstm", 100, 4, 256, False, torch.float32, cuda)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_persistent_kernel_only_for_sequences_its_barrier_can_count(monkeypatch):
    """The grid barrier's counter is an int32 that reaches T * programs: a longer sequence (16M
    steps on 132 SMs) takes the step kernels: where the count wraps, a step's target is negative
    and the programs that poll it pass the barrier before the others have written h."""
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setattr(pk, "_num_sms", lambda index: 132)
    monkeypatch.setattr(torch.version, "hip", None)
    cuda = torch.device("cuda", 0)
    programs = pk._plan(256, 4, cuda)[1]
    longest = (2 ** 31 - 1) // programs
    assert pk.supported("lstm", longest, 4, 256, False, torch.float32, cuda)
    assert not pk.supported("lstm", longest + 1, 4, 256, False, torch.float32, cuda)


@pytest.mark.skipif(CHILD or not HAS_TRITON, reason="parent process with triton installed only")
def test_interpreter_suite():
    """Run this file's interp_* tests with TRITON_INTERPRET=1 in a fresh process."""
    env = dict(os.environ, TRITON_INTERPRET="1", LSTMKIT_TRITON_INTERP_CHILD="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-x", "-p", "no:cacheprovider",
                        __file__, "-k", "interp_"], capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary, r.stdout[-2000:]


# --------------------------------------------------------------------------------------
# interpreter (child process)
# --------------------------------------------------------------------------------------

if CHILD:  # a kernel's globals are its module's: a kernel defined in a test would not see _tanh
    import triton
    import triton.language as tl

    from lstmkit.kernels.lstm_triton import _tanh

    @triton.jit
    def _tanh_kernel(X, Y, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(Y + offs, _tanh(tl.load(X + offs, mask=offs < N)), mask=offs < N)


@interp
@pytest.mark.parametrize("dtype, ulps", [(torch.float32, 4), (torch.float64, 5)])
def test_interp_tanh_is_accurate_relative_to_its_value(dtype, ulps):
    """2 / (1 + exp(-2x)) - 1 was off by about an ulp of 1 near 0, more than tanh(x) itself
    below |x| ~ 6e-8 in fp32 (1e7 ulps relative); every kernel's tanh is `_tanh`."""
    import triton

    mag = torch.logspace(-30, 2, 20001, dtype=torch.float64)  # the series' cut-offs 0.04, 0.25 included
    x = torch.cat([mag, -mag, torch.zeros(1, dtype=torch.float64)]).to(dtype)
    y = torch.empty_like(x)
    _tanh_kernel[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), BLOCK=4096)
    want = torch.tanh(x.double())
    assert y[-1] == 0 and torch.equal(y[:len(mag)], -y[len(mag):-1])
    rel = (y[:-1].double() - want[:-1]).abs() / want[:-1].abs()
    assert rel.max() <= ulps * torch.finfo(dtype).eps, x[rel.argmax()]


@interp
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("packed,reverse", [(None, False), (None, True), ([3, 3, 2, 1], False), ([3, 2, 2, 1], True)])
def test_interp_layer_matches_reference_fp64(cell, proj, packed, reverse):
    case = _layer_case(cell, 4, 3, 5, 3, proj=proj, packed=packed, reverse=reverse)
    want = _run_with_grads(reference_layer, *case)
    got = _run_with_grads(_triton_layer(), *case)
    _assert_close(got, want, rtol=1e-10, atol=1e-12)


@interp
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (1, 2, 3, 3), (6, 1, 2, 5), (3, 5, 4, 7), (2, 3, 2, 70)])
def test_interp_awkward_shapes_fp32(cell, T, B, I, H):
    """T=1, B=1, H=1/3/5/7 (not powers of two), and H=70 (more than one hidden-unit tile)."""
    case = _layer_case(cell, T, B, I, H, dtype=torch.float32)
    want = _run_with_grads(reference_layer, *case)
    got = _run_with_grads(_triton_layer(), *case)
    _assert_close(got, want, rtol=1e-4, atol=1e-5)


@interp
@pytest.mark.parametrize("cell", CELLS)
def test_interp_gradcheck(cell):
    from lstmkit.kernels import lstm_triton
    spec, x, (h0, c0), params, _, _ = _layer_case(cell, 2, 2, 2, 3, proj=2 if cell == "lstm" else 0)
    names = list(params)

    def f(x, h0, c0, *ps):
        y, (h, c) = lstm_triton.layer(spec, x, (h0, c0), dict(zip(names, ps)), None, False)
        return y, h, c
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params.values()), eps=1e-6, atol=1e-7)


@interp
@pytest.mark.parametrize("cell", ["peephole", "layernorm"])
def test_interp_strided_cell_parameters(cell):
    """A cell's own vectors (peepholes, LN gains and biases) as strided views, the same values."""
    spec, x, state, params, bs, reverse = _layer_case(cell, 3, 2, 3, 4)
    want = _run_with_grads(reference_layer, spec, x, state, params, bs, reverse)
    strided = {n: torch.stack([t, torch.full_like(t, 99.0)], -1)[..., 0] if t.dim() == 1 and n not in
               ("bias_ih", "bias_hh") else t for n, t in params.items()}
    assert any(not t.is_contiguous() for t in strided.values())
    got = _run_with_grads(_triton_layer(), spec, x, state, strided, bs, reverse)
    _assert_close(got, want, rtol=1e-10, atol=1e-12)


@interp
@pytest.mark.parametrize("cell", CELLS)
def test_interp_double_backward_matches_reference(cell):
    """create_graph=True (a gradient penalty): second derivatives equal the reference's."""
    spec, x, state, params, bs, reverse = _layer_case(cell, 3, 3, 2, 3, packed=[3, 2, 1], reverse=True)
    inputs = [x, *state, *params.values()]

    def second(fn):
        y, final = fn(spec, x, state, params, bs, reverse)
        first = torch.autograd.grad(y.pow(2).sum() + sum(s.pow(2).sum() for s in final), inputs, create_graph=True)
        return [*first, *torch.autograd.grad(sum(g.pow(2).sum() for g in first), inputs)]

    for got, want in zip(second(_triton_layer()), second(reference_layer)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@interp
@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_interp_empty_batch_matches_reference(cell, dtype):
    """B=0 (an empty last batch), with a projection: zero-size outputs, final state and dX and zero
    weight gradients, the reference's; the no-grad path too."""
    case = _layer_case(cell, 4, 0, 3, 5, proj=2, dtype=dtype)
    want = _run_with_grads(reference_layer, *case)
    got = _run_with_grads(_triton_layer(), *case)
    assert got["y"].shape == (4, 0, 2)
    _assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():
        y, (h, c) = _triton_layer()(*case)
    assert (y.shape, h.shape, c.shape) == ((4, 0, 2), (0, 2), (0, 5))


def _module_pair(cell, **kw):
    torch.manual_seed(0)
    ref = _perturbed(lstmkit.LSTM(3, 4, cell=cell, dtype=torch.float64, backend="reference", **kw))
    tri = lstmkit.LSTM(3, 4, cell=cell, dtype=torch.float64, backend="triton", **kw)
    tri.load_state_dict(ref.state_dict())
    return ref, tri


@interp
@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_interp_torch_func_transforms_match_reference(cell):
    """torch.func.grad, vjp, jacrev and vmap (over grad: per-sample gradients) through the module:
    the reference's numbers (the backend hands the layer over)."""
    from torch.func import functional_call, grad, jacrev, vjp, vmap
    ref, tri = _module_pair(cell, bidirectional=True)
    xs = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    params = {n: p.detach() for n, p in tri.named_parameters()}

    def results(m):
        def out(p, x):
            return functional_call(m, p, (x,))[0]

        def loss(p, x):
            return out(p, x).pow(2).sum()
        y, pullback = vjp(out, params, xs[0])
        return (grad(loss, argnums=(0, 1))(params, xs[0]), pullback(torch.ones_like(y)),
                jacrev(out, argnums=1)(params, xs[0, :, :1]), vmap(grad(loss), in_dims=(None, 0))(params, xs))

    torch.testing.assert_close(results(tri), results(ref), rtol=1e-9, atol=1e-10)


@interp
@pytest.mark.parametrize("params_need_grad", [False, True], ids=["frozen", "trainable"])
def test_interp_forward_mode_ad_matches_reference(params_need_grad):
    """Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp): the reference's tangents,
    whether or not the parameters require grad (frozen ones went to the Function, which raised)."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import jvp
    ref, tri = _module_pair("lstm", num_layers=2)
    for m in (ref, tri):
        m.requires_grad_(params_need_grad)
    x, tangent = torch.randn(3, 2, 3, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)

    def results(m):
        with fwAD.dual_level():
            y = fwAD.unpack_dual(m(fwAD.make_dual(x, tangent))[0])
            assert y.tangent is not None
            dual = (y.primal.clone(), y.tangent.clone())
        return dual, jvp(lambda x: m(x)[0], (x,), (tangent,))

    torch.testing.assert_close(results(tri), results(ref), rtol=1e-9, atol=1e-10)


@interp
def test_interp_batched_gradients_take_the_reference_backward():
    """A backward whose incoming gradients vmap batches (autograd.grad's is_grads_batched):
    the reference's backward, as the kernels cannot read them."""
    ref, tri = _module_pair("lstm")
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)

    def results(m):
        y = m(x)[0]
        return torch.autograd.grad(y, x, torch.eye(y.numel(), dtype=torch.float64)[:3].view(3, *y.shape),
                                   is_grads_batched=True)

    torch.testing.assert_close(results(tri), results(ref), rtol=1e-9, atol=1e-10)


@interp
@pytest.mark.parametrize("cell", CELLS)
def test_interp_module_packed_unsorted_bidirectional(cell):
    """lstmkit.LSTM(backend="triton"): 2 layers, bidirectional, PackedSequence with unsorted
    lengths, given (h0, c0); outputs, final states and every parameter gradient."""
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True, cell=cell, proj_size=2 if cell == "cifg" else 0)
    ref = _perturbed(lstmkit.LSTM(3, 4, backend="reference", **kw))
    tri = lstmkit.LSTM(3, 4, backend="triton", **kw)
    tri.load_state_dict(ref.state_dict())
    lengths = torch.tensor([2, 5, 1, 4])
    x = torch.randn(4, 5, 3)
    P = 2 if cell == "cifg" else 4
    h0, c0 = torch.randn(4, 4, P), torch.randn(4, 4, 4)
    results = []
    for m in (ref, tri):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = m(packed, (h0, c0))
        y, _ = pad_packed_sequence(out, batch_first=True)
        loss = (y ** 2).sum() + (h * 0.5).sum() + c.sum()
        grads = torch.autograd.grad(loss, list(m.parameters()))
        results.append((y, h, c, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@interp
@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_interp_output_changed_in_place_before_the_backward(cell):
    """y.relu_() between forward and backward: relu's gradients, as on the reference (the
    output used to be a view of the buffer the backward reads, and autograd refused). The
    batch_first output is a view of the last layer's; the hidden layer's y is saved uncopied."""
    torch.manual_seed(0)
    ref = _perturbed(lstmkit.LSTM(3, 5, num_layers=2, batch_first=True, cell=cell, backend="reference"))
    tri = lstmkit.LSTM(3, 5, num_layers=2, batch_first=True, cell=cell, backend="triton")
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 3, requires_grad=True)
    results = []
    for m in (ref, tri):
        y = m(x)[0]
        y.relu_()
        results.append(torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(),
                                           [x, *m.parameters()]))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@interp
def test_interp_resolve_backend_on_cpu_under_interpreter():
    from lstmkit.kernels import lstm_triton, resolve_backend
    assert "cpu" in lstm_triton.DEVICES
    assert resolve_backend("triton", "cpu", "layernorm") is lstm_triton.layer
    with pytest.raises(ValueError):
        resolve_backend("triton", "cpu", "gru")


@interp
@pytest.mark.parametrize("cell", CELLS)
def test_interp_inference_path_matches(cell):
    """Under no_grad nothing is saved (two cell-state slots, no gate stores): same numbers."""
    spec, x, state, params, bs, rev = _layer_case(cell, 5, 3, 4, 6, packed=[3, 3, 2, 2, 1])
    with torch.no_grad():
        want = reference_layer(spec, x, state, params, bs, rev)
        got = _triton_layer()(spec, x, state, params, bs, rev)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@interp
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_autocast(cell, dtype):
    """Under autocast the GEMMs run in the low dtype while the pointwise math and the cell state
    stay fp32 (the no-grad path included): no further from the fp32 reference than the
    reference itself under autocast (three times its distance, at least 1e-3).

    fp16: outputs and every gradient. bf16: outputs, and finite gradients only, because Triton's
    interpreter rounds fp32 -> bf16 towards zero (a GPU rounds to nearest even): its errors are
    biased and add up in the weight gradients' sums (bias gradients 5-18x the reference's
    distance here). test_gpu_autocast_bf16 runs bf16 on a GPU."""
    torch.manual_seed(0)
    ref = _perturbed(lstmkit.LSTM(8, 20, cell=cell, backend="reference"), 0.1)
    tri = lstmkit.LSTM(8, 20, cell=cell, backend="triton")
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(16, 3, 8)

    def run(m, autocast):
        m.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            y, (h, c) = m(x)
            (y.float().sum() + h.float().sum() + c.float().sum()).backward()
            with torch.no_grad():
                y_nograd, _ = m(x[:, :2].contiguous())
        return [y, h, c, y_nograd], [p.grad.clone() for p in m.parameters()]

    want, want_grads = run(ref, False)
    near, near_grads = run(ref, True)
    got, got_grads = run(tri, True)
    assert got[0].dtype == dtype
    pairs = list(zip(got, near, want))
    if dtype == torch.float16:
        pairs += list(zip(got_grads, near_grads, want_grads))
    else:
        assert all(torch.isfinite(g).all() for g in got_grads)
    for k, (g, n, w) in enumerate(pairs):
        budget = max(3 * (n.float() - w).abs().max().item(), 1e-3)
        assert (g.float() - w).abs().max().item() < budget, (k, budget)


@interp
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True])  # the inference path, and the training path
def test_interp_autocast_cell_state_stays_fp32(dtype, grad):
    """f = 1 (in fp32), i = 1/2, g = tanh(2^-9): c_t = c_{t-1} + ~1e-3. On c_0 = 10 the increments
    add up to ~10.016 over 16 steps in fp32; a half-precision cell state (spacing 2^-7 or 2^-4 at
    10) would keep 10. Backward, the same for dL/dc_{t-1} = dL/dc_t + ~1e-3 (from dL/dh_t = 2^-9)
    on dL/dc_T = 10. The module returns states in the parameters' dtype, so only values can tell."""
    T, B, I, H = 16, 2, 3, 5
    params = {"weight_ih": torch.zeros(4 * H, I), "weight_hh": torch.zeros(4 * H, H),
              "bias_ih": torch.zeros(4 * H), "bias_hh": torch.zeros(4 * H)}
    params["bias_ih"][H:2 * H] = 20.0  # sigmoid(20) rounds to 1 in fp32
    params["bias_ih"][2 * H:3 * H] = 2.0 ** -9  # exact in fp16 and bf16
    x, h0 = torch.randn(T, B, I), torch.zeros(B, H)
    with torch.autocast("cpu", dtype=dtype):
        y, (h, c) = _triton_layer()(SPECS["lstm"], x.requires_grad_(grad), (h0, torch.full((B, H), 10.0)),
                                    params, None, False)
    assert y.dtype == dtype
    torch.testing.assert_close(c, torch.full((B, H), 10.0 + T * 0.5 * math.tanh(2.0 ** -9)), rtol=0, atol=1e-5)
    if grad:
        def dc0(layer, dt, autocast):
            c0 = torch.zeros(B, H, dtype=dt, requires_grad=True)
            p = {k: v.to(dt) for k, v in params.items()}
            with torch.autocast("cpu", dtype=dtype, enabled=autocast):
                y, (_, c) = layer(SPECS["lstm"], x.detach().to(dt), (h0.to(dt), c0), p, None, False)
            (10 * c.sum() + 2.0 ** -9 * y.sum()).backward()
            return c0.grad
        torch.testing.assert_close(dc0(_triton_layer(), torch.float32, True),
                                   dc0(reference_layer, torch.float64, False).float(), rtol=0, atol=1e-5)


@interp
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_autocast_saturated_forget_gate_gradients(dtype):
    """a_f = 7.6: f = 0.99950, which bf16 rounds to 1 (f(1-f) = 0: no gradient; the interpreter,
    which truncates, to 0.99609) and fp16 to 0.99951. The backward reads the fp32 gates the
    forward computed: over T=4 steps dL/d b_f = T f^T (1-f) and dL/dc_0 = f^T are the fp32
    reference's within 1% (b_f itself rounds to 7.59375 / 7.6016 in the GEMM's dtype); from
    gates saved in the half type dL/d b_f was off by 2.4% (fp16) and 8x (bf16, interpreter)."""
    T = 4

    def grads(layer, dt, autocast):
        p = {"weight_ih": torch.zeros(4, 1), "weight_hh": torch.zeros(4, 1), "bias_ih": torch.zeros(4),
             "bias_hh": torch.zeros(4)}
        p["bias_ih"][1] = 7.6
        p = {k: v.to(dt).requires_grad_() for k, v in p.items()}
        c0 = torch.ones(1, 1, dtype=dt, requires_grad=True)
        with torch.autocast("cpu", dtype=dtype, enabled=autocast):
            _, (_, c) = layer(SPECS["lstm"], torch.zeros(T, 1, 1, dtype=dt), (torch.zeros(1, 1, dtype=dt), c0),
                              p, None, False)
        c.sum().backward()
        return torch.stack([p["bias_ih"].grad[1], c0.grad[0, 0]]).double()

    want = grads(reference_layer, torch.float64, False)
    torch.testing.assert_close(grads(_triton_layer(), torch.float32, True), want, rtol=1e-2, atol=0)


@interp
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
@pytest.mark.parametrize("packed,reverse", [(None, False), ([3, 2, 2, 1], False), ([3, 3, 1, 1], True)])
def test_interp_persistent_kernel(cell, packed, reverse):
    from lstmkit.kernels import lstm_triton_persistent as pk
    spec, x, (h0, c0), params, bs, rev = _layer_case(cell, 4, 3, 5, 6, packed=packed, reverse=reverse)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        y, (h, c) = reference_layer(spec, x, (h0, c0), params, bs, rev)
        # the peepholes as strided views (the kernel reads them with unit strides)
        strided = {k: torch.stack([v, v + 99], -1)[..., 0] if k.startswith("weight_c") else v for k, v in params.items()}
        y2, h2, c2 = pk.forward(cell, x, h0, c0, strided, tuple(packed) if packed else None, rev,
                                torch.float64, torch.float64, False)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)
    assert pk.last_sync.tolist() == [4, 0]


@interp
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("packed,reverse", [(None, False), ([3, 3, 1], True)])
def test_interp_persistent_kernel_split_product(cell, split, packed, reverse):
    """The recurrent product as `split` chains over chunks of H (H=40: K padded to 64, the last
    chunk partly padding)."""
    from lstmkit.kernels import lstm_triton_persistent as pk
    spec, x, (h0, c0), params, bs, rev = _layer_case(cell, 3, 3, 5, 40, packed=packed, reverse=reverse)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        y, (h, c) = reference_layer(spec, x, (h0, c0), params, bs, rev)
        y2, h2, c2 = pk.forward(cell, x, h0, c0, params, tuple(packed) if packed else None, rev,
                                torch.float64, torch.float64, False, pk.tuning(40, 3, split=split))
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)


@interp
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
@pytest.mark.parametrize("B,packed,reverse", [(1, None, False), (2, None, True), (2, [2, 2, 1], False)])
@pytest.mark.parametrize("H", [6, 40])
def test_interp_persistent_kernel_multiply_add_product(cell, B, packed, reverse, H):
    """B <= 2: the product as multiply-adds, the rows padded to 1 or 2."""
    from lstmkit.kernels import lstm_triton_persistent as pk
    spec, x, (h0, c0), params, bs, rev = _layer_case(cell, 3, B, 5, H, packed=packed, reverse=reverse)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        y, (h, c) = reference_layer(spec, x, (h0, c0), params, bs, rev)
        y2, h2, c2 = pk.forward(cell, x, h0, c0, params, tuple(packed) if packed else None, rev,
                                torch.float64, torch.float64, False, pk.tuning(H, B, fma=True))
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(h2, h)
    torch.testing.assert_close(c2, c)


@interp
@pytest.mark.parametrize("cell", ["lstm", "cifg"])
@pytest.mark.parametrize("T", [1, 3])
def test_interp_persistent_partition_over_programs(cell, T, monkeypatch):
    """Several programs, each owning a slice of hidden units (as on a GPU). The interpreter runs
    programs one after another, so only a single step is meaningful (its barrier cannot open;
    the spin limit is set to 0 and the outputs after it are poisoned, as designed).

    T=3: every output after the failed barrier is NaN, y included (it was finite and wrong): the
    two programs that gave up poison their state, and their h the others'. Here only the first
    program's first step is right: each later program starts after the earlier ones have ended,
    and reads their last (poisoned) h in place of h_0."""
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setattr(pk, "SPIN_LIMIT", 0)
    monkeypatch.setattr(pk, "_plan", lambda H, elem, dev: (4, -(-H // 4), max(16, pk._next_pow2(H))))
    spec, x, (h0, c0), params, _, _ = _layer_case(cell, T, 3, 5, 10)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        y, _ = reference_layer(spec, x, (h0, c0), params)
        y2, h2, c2 = pk.forward(cell, x, h0, c0, params, None, False, torch.float64, torch.float64, False)
    # the first two programs gave up waiting (visibly: NaN final states); the last one saw all arrivals
    assert pk.last_sync.tolist() == [3 * T, 2]
    if T == 1:
        torch.testing.assert_close(y2, y)
        assert torch.isnan(h2[:, :8]).all() and not torch.isnan(h2[:, 8:]).any()
    else:
        torch.testing.assert_close(y2[0, :, :4], y[0, :, :4])
        assert torch.isnan(y2[0, :, 4:]).all() and torch.isnan(y2[1:]).all()
        assert torch.isnan(h2).all() and torch.isnan(c2).all()


@interp
def test_interp_persistent_launch_refused_falls_back_to_step_kernels(monkeypatch):
    """A GPU that gives a block less shared memory than the compiled persistent kernel needs (fp32
    H=768 on an A100: 194 KB of 163 KB) refuses its launch with Triton's OutOfResources, before
    anything runs: inference takes the step kernels instead (it raised), and that launch is not
    tried again. The launch is faked on CPU tensors, as on an NVIDIA GPU (pk.supported)."""
    from triton.runtime.errors import OutOfResources

    from lstmkit.kernels import lstm_triton as lt
    from lstmkit.kernels import lstm_triton_persistent as pk
    launches = []

    class Refused:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(grid)
                raise OutOfResources(198656, 166912, "shared memory")
            return launch

    monkeypatch.setattr(pk, "supported", lambda *args: True)
    monkeypatch.setattr(pk, "_persistent_lstm_kernel", Refused())
    monkeypatch.setattr(lt, "_refused", set())
    spec, x, state, params, bs, rev = _layer_case("lstm", 3, 2, 4, 6, packed=[2, 2, 1])
    with torch.no_grad():
        want = reference_layer(spec, x, state, params, bs, rev)
        for _ in range(2):
            torch.testing.assert_close(_triton_layer()(spec, x, state, params, bs, rev), want)
    assert len(launches) == 1 and len(lt._refused) == 1


@interp
@pytest.mark.parametrize("kw,B,H", [(dict(persistent_fma=True), 3, 6), (dict(persistent_split=2), 2, 6),
                                    (dict(persistent_split=2, persistent_warps=2), 3, 40)])
def test_interp_persistent_settings_a_shape_cannot_take_give_way(kw, B, H, monkeypatch):
    """settings() hold for every shape: the multiply-add product at B > 2, or two chains of the
    product at H < 32 (one chunk of 16 rows), give way to the default launch for that shape
    (layer() raised ValueError); a setting the shape takes is kept (the third case)."""
    from lstmkit.kernels import lstm_triton as lt
    from lstmkit.kernels import lstm_triton_persistent as pk
    monkeypatch.setattr(pk, "supported", lambda *args: True)  # as on an NVIDIA GPU
    monkeypatch.setattr(pk, "last_sync", None)
    spec, x, state, params, bs, rev = _layer_case("lstm", 3, B, 4, H)
    with torch.no_grad():
        want = reference_layer(spec, x, state, params, bs, rev)
        with lt.settings(**kw):
            got = _triton_layer()(spec, x, state, params, bs, rev)
    assert pk.last_sync is not None, "the persistent kernel did not run"
    torch.testing.assert_close(got, want)


@interp
def test_interp_packed_padding_is_zero_and_its_gradient_dropped():
    """Past a row's length y is 0 even where the row's carried h is not finite (a -inf c_0 of a
    peephole cell: NaN, and NaN * 0 was NaN); the gradients arriving for the padding (constants)
    are dropped, NaN ones too (with a projection the finished rows' carry took them in)."""
    spec, x, (h0, c0), params, bs, rev = _layer_case("peephole", 3, 3, 2, 5, packed=[3, 2, 1])
    with torch.no_grad():
        c0[2, 0] = float("-inf")
        want = reference_layer(spec, x, (h0, c0), params, bs, rev)[0]
        got = _triton_layer()(spec, x, (h0, c0), params, bs, rev)[0]
    assert torch.isnan(got[0, 2]).any() and (got[1:, 2] == 0).all()
    torch.testing.assert_close(got, want, equal_nan=True)

    spec, x, (h0, c0), params, bs, rev = _layer_case("lstm", 3, 3, 2, 4, proj=2, packed=[3, 2, 1])
    ins = [x, h0, c0, *params.values()]

    def grads(fn):
        y, (h, c) = fn(spec, x, (h0, c0), params, bs, rev)
        g = torch.Generator().manual_seed(1)
        gy, gh, gc = (torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (y, h, c))
        gy[~(torch.arange(3)[None, :] < bs[:, None])] = float("nan")
        return torch.autograd.grad([y, h, c], ins, [gy, gh, gc])

    torch.testing.assert_close(grads(_triton_layer()), grads(reference_layer), rtol=1e-10, atol=1e-12)


@interp
def test_interp_layernorm_overflowing_variance_gradients():
    """fp32 states near 1e30: the variances of LN(c) and LN(h W_hh^T) overflow, so the normalised
    values are 0 (two-pass, as the kernels and the reference compute them) and so are the LN
    gains' gradients; their recompute with F.layer_norm gave NaN."""
    spec, x, (h0, c0), params, bs, rev = _layer_case("layernorm", 2, 2, 3, 3, proj=2, dtype=torch.float32)
    with torch.no_grad():
        h0.mul_(1e30)
        c0.mul_(1e30)
    want = _run_with_grads(reference_layer, spec, x, (h0, c0), params, bs, rev)
    got = _run_with_grads(_triton_layer(), spec, x, (h0, c0), params, bs, rev)
    for k in ("dln_weight_hh", "dln_weight_c"):
        assert torch.isfinite(got[k]).all(), k
    _assert_close(got, {k: want[k] for k in ("y", "c", "dln_weight_hh", "dln_weight_c", "dln_bias_c")},
                  rtol=1e-4, atol=1e-5)


@interp
def test_interp_bias_gradients_are_separate_tensors():
    """bias_ih's and bias_hh's gradients are equal but two tensors (torch.autograd.grad returned
    one tensor twice: an in-place change of one, an optimizer's, changed the other)."""
    spec, x, state, params, bs, rev = _layer_case("lstm", 2, 2, 3, 4)
    y, _ = _triton_layer()(spec, x, state, params, bs, rev)
    g_ih, g_hh = torch.autograd.grad(y.sum(), [params["bias_ih"], params["bias_hh"]])
    assert g_ih.data_ptr() != g_hh.data_ptr()
    torch.testing.assert_close(g_ih, g_hh, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------

@pytest.fixture
def ieee():
    """Full fp32 GEMMs on both sides, so the comparison with the reference is tight."""
    old = torch.backends.cudnn.rnn.fp32_precision
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    yield
    torch.backends.cudnn.rnn.fp32_precision = old


@gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("proj,packed,reverse", [(0, None, False), (0, [4, 4, 3, 1, 1], True), (8, [4, 3, 3, 2, 1], False)])
def test_gpu_layer_matches_reference(cell, proj, packed, reverse, ieee):
    case = _layer_case(cell, 5, 4, 24, 40, proj=proj, packed=packed, reverse=reverse, dtype=torch.float32,
                       device="cuda")
    want = _run_with_grads(reference_layer, *case)
    for _ in range(3):  # eager, then captured, then replayed
        got = _run_with_grads(_triton_layer(), *case)
        _assert_close(got, want, rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_module_training_steps_with_graphs(cell, ieee):
    """Several optimizer steps: the captured graphs must read the updated weights."""
    from lstmkit.kernels import lstm_triton
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True, cell=cell, batch_first=True)
    ref = _perturbed(lstmkit.LSTM(16, 32, backend="reference", **kw)).cuda()
    tri = lstmkit.LSTM(16, 32, backend="triton", **kw).cuda()
    tri.load_state_dict(ref.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ref, tri)]
    for step in range(4):
        x = torch.randn(3, 7, 16, device="cuda")
        for m, opt in zip((ref, tri), opts):
            opt.zero_grad()
            y, (h, c) = m(x)
            ((y ** 2).mean() + h.sum() + c.sum()).backward()
            opt.step()
        torch.testing.assert_close(tri.weight_hh_l1_reverse, ref.weight_hh_l1_reverse, rtol=1e-4, atol=1e-5)
    assert lstm_triton._graphs, "no CUDA graph was captured"


@gpu
def test_gpu_auto_picks_triton():
    from lstmkit.kernels import lstm_triton, resolve_backend
    assert resolve_backend("auto", "cuda", "peephole") is lstm_triton.layer


@gpu
@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
@pytest.mark.parametrize("B,H", [(1, 256), (4, 1000), (16, 512), (8, 1024)])
def test_gpu_persistent_kernel(cell, B, H, ieee):
    from lstmkit.kernels import lstm_triton_persistent as pk
    assert pk.supported(cell, 30, B, H, False, torch.float32)
    # weights on torch's scale (a large random perturbation at H=1000 makes the recurrence
    # chaotic: any rounding difference then grows along the sequence)
    spec, x, (h0, c0), params, _, _ = _layer_case(cell, 30, B, 64, H, dtype=torch.float32, device="cuda",
                                                  scale=0.5 / H ** 0.5)
    params = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        for packed, rev in ((None, False), ([B] * 10 + [max(1, B // 2)] * 20, True)):
            bs = torch.tensor(packed) if packed else None
            y, (h, c) = reference_layer(spec, x, (h0, c0), params, bs, rev)
            pk.last_sync = None
            y2, (h2, c2) = _triton_layer()(spec, x, (h0, c0), params, bs, rev)
            assert pk.last_sync is not None, "the persistent kernel did not run"
            assert pk.last_sync[1].item() == 0
            for a, b in ((y2, y), (h2, h), (c2, c)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@gpu
def test_gpu_persistent_kernel_graph_replay(ieee):
    """Inference through the persistent kernel is captured as a CUDA graph on a configuration's
    second call; replays give the reference's values for new inputs and for weights changed in
    place (the graph reads the parameters' memory)."""
    from lstmkit.kernels import lstm_triton
    torch.manual_seed(0)
    tri = lstmkit.LSTM(48, 96, backend="triton").cuda()
    ref = lstmkit.LSTM(48, 96, backend="reference").cuda()
    ref.load_state_dict(tri.state_dict())
    lstm_triton.clear_graph_cache()
    with torch.no_grad():
        for k in range(4):
            if k == 3:
                for a, b in zip(tri.parameters(), ref.parameters()):
                    a.mul_(0.9)
                    b.mul_(0.9)
            x = torch.randn(20, 3, 48, device="cuda")
            y, (h, c) = tri(x)
            y_r, (h_r, c_r) = ref(x)
            for a, b in ((y, y_r), (h, h_r), (c, c_r)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert any("_persistent_impl" in key for key in lstm_triton._graphs), "no persistent graph was captured"


@gpu
@pytest.mark.parametrize("B,H", [(1, 256), (8, 1024)])
def test_gpu_persistent_kernel_launches(B, H, ieee):
    """Launches benchmarks/gpu_lstm.py --tune times give the reference's values, and each through
    the module is a graph of its own (a graph captured with one is not replayed for another)."""
    from lstmkit.kernels import lstm_triton
    from lstmkit.kernels import lstm_triton_persistent as pk
    torch.manual_seed(0)
    tri = lstmkit.LSTM(H, H, backend="triton").cuda()
    ref = lstmkit.LSTM(H, H, backend="reference").cuda()
    ref.load_state_dict(tri.state_dict())
    lstm_triton.clear_graph_cache()
    x = torch.randn(30, B, H, device="cuda")
    with torch.no_grad():
        y_r, (h_r, c_r) = ref(x)
        launches = [pk.tuning(H, B, w, s) for w, s in ((4, 1), (8, 1), (4, 2), (8, 4), (4, 8))]
        launches += [pk.tuning(H, B, w, 1, True) for w in (8, 32) if B <= pk.FMA_MAX_BATCH]
        for t in launches:
            with lstm_triton.settings(persistent_warps=t.warps, persistent_split=t.split):
                for _ in range(3):  # eager, captured, replayed
                    y, (h, c) = tri(x)
                    for a, b in ((y, y_r), (h, h_r), (c, c_r)):
                        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, t=t: f"{t}: {m}")
    assert sum("_persistent_impl" in key for key in lstm_triton._graphs) == len(launches)


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_autocast_bf16(cell):
    """bf16 GEMMs, fp32 pointwise and cell state: no further from the fp32 reference than the
    reference itself under autocast (whose pointwise math is bf16 too), and training runs."""
    torch.manual_seed(0)
    ref = _perturbed(lstmkit.LSTM(32, 64, cell=cell, backend="reference"), 0.1).cuda()
    tri = lstmkit.LSTM(32, 64, cell=cell, backend="triton").cuda()
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(12, 5, 32, device="cuda")
    y, (h, c) = ref(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_ac, _ = ref(x)
        y2, (h2, c2) = tri(x)
        assert y2.dtype == torch.bfloat16 and c2.dtype == torch.float32
        y2.float().sum().backward()
        with torch.no_grad():
            y3, _ = tri(x[:, :2].contiguous())  # persistent path (cells without LN)
    budget = max(2 * (y_ac.float() - y).abs().max().item(), 1e-2)
    for a, b in ((y2, y), (h2, h), (c2, c)):
        assert (a.float() - b).abs().max().item() < budget
    assert (y3.float() - y[:, :2]).abs().max().item() < budget
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tri.parameters())
