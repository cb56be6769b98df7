"""lstmkit.costs: parameter counts equal real modules', FLOPs and memory by hand on tiny cases."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import lstmkit
from lstmkit import costs
from lstmkit.cells import LSTM_CELLS
from lstmkit.costs import RNNConfig

GRID = list(itertools.product(
    [(5, 7), (28, 256)],  # (input_size, hidden_size)
    [1, 3],  # num_layers
    [False, True],  # bidirectional
    [0, 3],  # proj_size
    [True, False],  # bias
))


@pytest.mark.parametrize("sizes, layers, bidir, proj, bias", GRID)
def test_lstm_counts_equal_torch(sizes, layers, bidir, proj, bias):
    I, H = sizes
    config = RNNConfig(I, H, layers, "lstm", bidir, proj, bias)
    ref = torch.nn.LSTM(I, H, layers, bias=bias, bidirectional=bidir, proj_size=proj)
    assert [(r.name, r.shape) for r in costs.parameter_table(config)] == \
        [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
    assert costs.parameter_count(config) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("cell, torch_cls", [("gru", torch.nn.GRU), ("rnn_tanh", torch.nn.RNN)])
@pytest.mark.parametrize("layers, bidir, bias", [(1, False, True), (2, True, False)])
def test_gru_rnn_counts_equal_torch(cell, torch_cls, layers, bidir, bias):
    config = RNNConfig(6, 10, layers, cell, bidir, 0, bias)
    ref = torch_cls(6, 10, layers, bias=bias, bidirectional=bidir)
    assert costs.parameter_count(config) == sum(p.numel() for p in ref.parameters())


def test_variant_counts():
    I, H = 5, 7
    lstm = costs.parameter_count(RNNConfig(I, H))
    assert costs.parameter_count(RNNConfig(I, H, cell="peephole")) == lstm + 3 * H
    assert costs.parameter_count(RNNConfig(I, H, cell="cifg")) == lstm * 3 // 4
    assert costs.parameter_count(RNNConfig(I, H, cell="layernorm")) == lstm + 4 * 4 * H + 2 * H


def test_meta_module_allocates_nothing():
    module = RNNConfig(4096, 4096, num_layers=4, bidirectional=True).module()
    assert all(p.device.type == "meta" for p in module.parameters())


def test_four_gates_four_times_a_dense_layer():
    # Without biases an LSTM layer is exactly 4 dense layers [x; h] -> H; with them a bit more.
    assert costs.parameter_count(RNNConfig(256, 256, bias=False)) == \
        4 * costs.dense_parameter_count(RNNConfig(256, 256, bias=False))
    ratio = costs.parameter_count(RNNConfig(28, 256)) / costs.dense_parameter_count(RNNConfig(28, 256))
    assert 4.0 < ratio < 4.05
    assert costs.dense_parameter_count(RNNConfig(28, 256)) == (28 + 256) * 256 + 256
    cifg = RNNConfig(28, 256, num_layers=2, bidirectional=True, cell="cifg", bias=False)
    assert costs.parameter_count(cifg) == 3 * costs.dense_parameter_count(cifg)


def test_flops_by_hand():
    # I=2, H=3, B=1, one LSTM layer with bias. Per step: gates 2*(2+3)*4*3 = 120 FLOPs of GEMM,
    # pointwise 21 per unit * 3 units = 63. Backward: 2x each.
    f = costs.step_flops(RNNConfig(2, 3), batch_size=1)
    assert (f.forward_gemm, f.forward_pointwise, f.backward_gemm, f.backward_pointwise) == (120, 63, 240, 126)
    # A sequence's first step forms no dh_0 = dGates U: 2*H*4H = 2*3*12 less per sequence.
    seq = costs.sequence_flops(RNNConfig(2, 3), seq_len=5, batch_size=4)
    assert seq.forward_gemm == 5 * 4 * 120 and seq.training == 5 * 4 * (120 + 63) * 3 - 4 * 2 * 3 * 12
    assert costs.packed_flops(RNNConfig(2, 3), (5, 5, 5, 5)) == seq
    packed = costs.packed_flops(RNNConfig(2, 3), [5, 2, 1])
    assert (packed.forward_gemm, packed.backward_gemm) == (8 * 120, 8 * 240 - 3 * 2 * 3 * 12)
    # Projection P=2: recurrent width 2, plus the H -> P product 2*3*2.
    assert costs.step_flops(RNNConfig(2, 3, proj_size=2), 1).forward_gemm == 2 * (2 + 2) * 12 + 2 * 3 * 2
    # Two bidirectional layers: layer 1 reads 2H; no bias: 13 pointwise per unit.
    f = costs.step_flops(RNNConfig(2, 3, num_layers=2, bidirectional=True, bias=False), 1)
    assert f.forward_gemm == 2 * (2 * (2 + 3) * 12) + 2 * (2 * (6 + 3) * 12)
    assert f.forward_pointwise == 4 * 13 * 3


def test_flops_match_the_usual_lstm_count():
    # The shapes of the performance notes: forward GEMMs = 2*T*B*(I+H)*4H.
    T, B, I, H = 100, 32, 128, 256
    assert costs.sequence_flops(RNNConfig(I, H), T, B).forward_gemm == 2 * T * B * (I + H) * 4 * H


def _counted_gemm_flops(config: RNNConfig, x: torch.Tensor, lengths: list[int] | None) -> tuple[int, int]:
    """(forward, backward) FLOPs of the matrix products the reference backend really runs, as
    torch's FlopCounterMode counts them; the backward takes dX and every weight gradient with no
    h_0 given, as the bench's fwd+bwd does."""
    kwargs = {"num_layers": config.num_layers, "bias": config.bias, "bidirectional": config.bidirectional,
              "backend": "reference"}
    if config.cell == "gru":
        module = lstmkit.GRU(config.input_size, config.hidden_size, **kwargs)
    elif config.cell.startswith("rnn_"):
        module = lstmkit.RNN(config.input_size, config.hidden_size, nonlinearity=config.cell[4:], **kwargs)
    else:
        module = lstmkit.LSTM(config.input_size, config.hidden_size, cell=config.cell, proj_size=config.proj_size,
                              **kwargs)
    x = x.requires_grad_()

    def output() -> torch.Tensor:
        if lengths is None:
            return module(x)[0]
        return module(pack_padded_sequence(x, lengths))[0].data

    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        output()
    y = output()
    with FlopCounterMode(display=False) as backward:
        torch.autograd.grad(y, [x, *module.parameters()], torch.randn_like(y))
    return forward.get_total_flops(), backward.get_total_flops()


@pytest.mark.parametrize("config, lengths", [
    (RNNConfig(3, 8), None), (RNNConfig(5, 7, cell="cifg"), None), (RNNConfig(5, 7, cell="peephole"), None),
    (RNNConfig(5, 7, cell="gru"), None), (RNNConfig(5, 7, cell="rnn_tanh", bias=False), None),
    (RNNConfig(5, 7, num_layers=2, bidirectional=True, proj_size=3), None),
    (RNNConfig(5, 7, num_layers=2, bidirectional=True, cell="gru"), None),
    # Packed, forward direction only: in reverse the reference forms dh_0 of a late starter (packed_flops).
    (RNNConfig(3, 8), [4, 3, 3, 1]), (RNNConfig(5, 7, num_layers=2, proj_size=3), [3, 1]),
], ids=lambda v: f"{v.cell}-L{v.num_layers}-bi{int(v.bidirectional)}-P{v.proj_size}" if isinstance(v, RNNConfig)
    else "packed" if v else "dense")
def test_gemm_flops_equal_torchs_count(config, lengths):
    T, B = (3, 2) if lengths is None else (max(lengths), len(lengths))
    counted = _counted_gemm_flops(config, torch.randn(T, B, config.input_size), lengths)
    flops = costs.sequence_flops(config, T, B) if lengths is None else costs.packed_flops(config, lengths)
    assert (flops.forward_gemm, flops.backward_gemm) == counted


def test_activation_memory_by_hand():
    # T=3, B=2, I=4, H=5, LSTM: x 3*2*4; gates 3*2*20; c 3*2*5; h 3*2*5.
    rows = {m.what: m.floats for m in costs.activation_memory(RNNConfig(4, 5), 3, 2)}
    assert rows == {"layer-0 input x": 24, "gate activations": 120, "cell states c_t": 30,
                    "hidden states h_t (layer outputs)": 30}
    proj = costs.activation_memory(RNNConfig(4, 5, proj_size=2, num_layers=2, bidirectional=True), 3, 2)
    rows = {m.what: m.floats for m in proj}
    assert rows["hidden states h_t (layer outputs)"] == 3 * 2 * 4 * 2
    assert rows["unprojected o * tanh(c_t) (for dW_hr)"] == 3 * 2 * 4 * 5
    assert costs.dtype_size("bfloat16") == 2


@pytest.mark.parametrize("cell", LSTM_CELLS)
@pytest.mark.parametrize("proj", [0, 3])
def test_activation_memory_per_step_is_what_the_numba_layers_save(cell, proj):
    """The model counted the layer-norm cell's gate activations and both projections before
    normalisation, 14H+6 floats a row, where its numba layers save 11H+4. Compared per step, as
    what the model leaves out does not grow with T (initial states, one step's scratch,
    placeholders) except the layer's batch sizes, one int64 (two floats) per step."""
    L, B, I, H = 2, 3, 5, 6
    config = RNNConfig(I, H, proj_size=proj, num_layers=L, cell=cell)

    def excess(T: int) -> int:
        torch.manual_seed(0)
        module = lstmkit.LSTM(I, H, proj_size=proj, num_layers=L, cell=cell, backend="numba")
        model = sum(m.floats for m in costs.activation_memory(config, T, B)[1:])  # without x
        return costs.saved_bytes(module, torch.randn(T, B, I, requires_grad=True)) // 4 - model  # float32

    assert excess(14) - excess(7) == 7 * L * 2


@pytest.mark.parametrize("kwargs, name", [
    ({"input_size": 0, "hidden_size": 4}, "input_size"),
    ({"input_size": 3, "hidden_size": -1}, "hidden_size"),
    ({"input_size": 3, "hidden_size": 4, "cell": "lstmm"}, "cell"),
    ({"input_size": 3, "hidden_size": 4, "proj_size": 4}, "proj_size"),
    ({"input_size": 3, "hidden_size": 4, "cell": "gru", "proj_size": 2}, "proj_size"),
    ({"input_size": 3, "hidden_size": 4, "num_layers": 0}, "num_layers"),
])
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RNNConfig(**kwargs)


@pytest.mark.parametrize("built, kwargs, message", [
    ({"hidden_size": 5}, {"hidden_size": 5.0}, "hidden_size: expected an int, got float"),
    ({"hidden_size": 5}, {"hidden_size": 5, "bias": 1}, "bias: expected a bool, got int"),
    ({"hidden_size": 5, "proj_size": 1}, {"hidden_size": 5, "proj_size": True}, "proj_size: expected an int, got bool"),
    ({"hidden_size": 5}, {"hidden_size": [5]}, "hidden_size: expected an int, got list"),
])
def test_a_config_of_the_wrong_types_is_refused_after_an_equal_one_was_built(built, kwargs, message):
    """The checks ran through the module cache, and 5.0 == 5 and 1 == True there: once the valid
    config was cached, the wrong one passed and its floats flowed into the counts."""
    RNNConfig(3, **built).module()
    with pytest.raises(TypeError, match=f"^{message}$"):
        RNNConfig(3, **kwargs)


def test_bad_sizes_and_dtype():
    with pytest.raises(ValueError, match="batch_size"):
        costs.step_flops(RNNConfig(3, 4), 0)
    with pytest.raises(ValueError, match="seq_len"):
        costs.activation_memory(RNNConfig(3, 4), 0, 2)
    with pytest.raises(ValueError, match="^lengths: expected at least one sequence length, got none$"):
        costs.packed_flops(RNNConfig(3, 4), [])
    with pytest.raises(ValueError, match=r"^lengths\[1\]: expected a positive int, got 0$"):
        costs.packed_flops(RNNConfig(3, 4), [2, 0])
    with pytest.raises(TypeError, match="^lengths: expected a list of ints, got int$"):
        costs.packed_flops(RNNConfig(3, 4), 5)
    with pytest.raises(ValueError, match="dtype"):
        costs.dtype_size("int8")
