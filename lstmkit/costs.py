"""What a recurrent layer stack costs: parameters, FLOPs and training activation memory.

Pure functions of a config (`RNNConfig`); nothing here allocates or runs a model.

Parameters are read off the real module (`lstmkit.nn.RecurrentBase`) built on the meta device,
so the per-tensor list and the counts are exact by construction, for every cell, direction,
projection and bias setting.

FLOPs count a multiply-add as 2 FLOPs. Per time step, per layer and direction, with G gates,
hidden size H, recurrent width R (= proj_size P if set, else H), layer input width I_l:
    forward GEMMs       2 * B * (I_l + R) * G * H        (input and recurrent products)
    projection          2 * B * H * P                    (only with proj_size > 0)
    forward pointwise   B * H * POINTWISE_FLOPS[cell]    (see the table below)
    backward GEMMs      2 x the forward GEMMs            (dX and the weight gradients at every
                                                          step, dH_prev at every step but a
                                                          sequence's first: see below)
    backward pointwise  2 x the forward pointwise        (an estimate: each op's derivative is
                                                          about a multiply and an add)
The input product of all T steps is usually done as one GEMM; that moves FLOPs, not their count.
A sequence's first step has no dH_prev to form: h_0 (the zeros of a call given none) needs no
gradient, so a sequence's backward is 2 x its forward GEMMs less one recurrent product
2 * B * R * G * H per layer and direction (`sequence_flops`, `packed_flops`; `step_flops` is a step
after the first). With an h_0 that needs a gradient (a learned initial state) add it back.

Activation memory for training is what a BPTT implementation must keep from the forward pass
for the backward pass (see `activation_memory` for the exact list); weights, gradients and
optimizer state are not activations and are reported separately.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Iterable

import torch

from lstmkit.cells import CELLS, get_cell
from lstmkit.nn import RecurrentBase, checks

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Forward pointwise FLOPs per hidden unit and batch row in one step: (without bias, per bias).
# Every elementwise add, multiply, sigmoid, tanh or relu counts 1 (transcendentals cost more
# cycles than that, but the pointwise work is O(B*H) against the GEMMs' O(B*H*(I+H))).
#   lstm       G=4 pre-activation sums W x + U h (4, +2 per gate row with biases: +8),
#              4 activations, c = f*c + i*g (3), tanh(c) (1), h = o*tanh(c) (1)      -> 13 (+8)
#   peephole   lstm + p_i*c, p_f*c, p_o*c_t and their adds (6)                        -> 19 (+8)
#   cifg       G=3 sums (3, +6), 3 activations, i = 1 - f (1), c (3), tanh (1), h (1) -> 12 (+6)
#   layernorm  lstm + LN over 4H of W x and of U h (2 * 4 * 7) + LN over H of c (7),
#              7 per normalised value: mean, centre, square, variance, scale, gain, bias -> 76 (+8)
#   gru        r, z: add + sigmoid (4); n = tanh(x_n + r*h_n) (3);
#              h = (1-z)*n + z*h (4); biases +6                                        -> 11 (+6)
#   rnn_*      W x + U h (1), activation (1), biases +2                                -> 2 (+2)
POINTWISE_FLOPS: dict[str, tuple[int, int]] = {
    "lstm": (13, 8),
    "peephole": (19, 8),
    "cifg": (12, 6),
    "layernorm": (76, 8),
    "gru": (11, 6),
    "rnn_tanh": (2, 2),
    "rnn_relu": (2, 2),
}
assert set(POINTWISE_FLOPS) == set(CELLS)


@dataclass(frozen=True)
class RNNConfig:
    """A stack of recurrent layers, described as `lstmkit.LSTM`/`GRU`/`RNN` take it."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True

    def __post_init__(self) -> None:
        get_cell(self.cell)  # ValueError naming `cell`
        # The module's own checks, each error naming its argument. Not through module()'s cache:
        # it would take an equal config of other types (5.0 == 5, 1 == True) for this one.
        _build(self)

    def module(self):
        """The real module on the meta device (no memory is allocated)."""
        return _meta_module(self)

    @property
    def num_gates(self) -> int:
        return CELLS[self.cell].num_gates

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def recurrent_size(self) -> int:
        """Width of the recurrent state h fed back into the gates: P with a projection, else H."""
        return self.proj_size or self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.recurrent_size * self.num_directions


@functools.lru_cache(maxsize=64)
def _meta_module(config: RNNConfig):
    return _build(config)


def _build(config: RNNConfig):
    return RecurrentBase(config.cell, config.input_size, config.hidden_size, config.num_layers,
                         bias=config.bias, bidirectional=config.bidirectional,
                         proj_size=config.proj_size, device="meta")


@dataclass(frozen=True)
class ParamRow:
    name: str
    shape: tuple[int, ...]
    numel: int


def parameter_table(config: RNNConfig) -> list[ParamRow]:
    """Every parameter tensor of the module, in registration order (as `state_dict` lists them)."""
    return [ParamRow(n, tuple(p.shape), p.numel()) for n, p in config.module().named_parameters()]


def parameter_count(config: RNNConfig) -> int:
    return sum(row.numel for row in parameter_table(config))


def dense_parameter_count(config: RNNConfig) -> int:
    """The same stack with each cell replaced by one dense layer [x_t; h_{t-1}] -> H.

    Per layer and direction: (I_l + R) * H weights plus H biases (with bias). An LSTM layer has
    four such blocks (one per gate, plus a second bias vector), hence about 4x the parameters.
    """
    H, R = config.hidden_size, config.recurrent_size
    per_layer = [(config.layer_input_size(k) + R) * H + (H if config.bias else 0)
                 for k in range(config.num_layers)]
    return sum(per_layer) * config.num_directions


@dataclass(frozen=True)
class Flops:
    """FLOPs of a pass, split into matrix products (GEMMs) and pointwise work."""

    forward_gemm: int
    forward_pointwise: int
    backward_gemm: int
    backward_pointwise: int

    @property
    def forward(self) -> int:
        return self.forward_gemm + self.forward_pointwise

    @property
    def backward(self) -> int:
        return self.backward_gemm + self.backward_pointwise

    @property
    def training(self) -> int:
        """Forward plus backward."""
        return self.forward + self.backward


def step_flops(config: RNNConfig, batch_size: int) -> Flops:
    """FLOPs of one time step through every layer and direction, for `batch_size` rows, a step
    after the first (its backward forms dH_prev)."""
    B = checks.positive_int("batch_size", batch_size)
    H, R, G, P = config.hidden_size, config.recurrent_size, config.num_gates, config.proj_size
    base, per_bias = POINTWISE_FLOPS[config.cell]
    pointwise_per_unit = base + (per_bias if config.bias else 0)
    gemm = pointwise = 0
    for layer in range(config.num_layers):
        per_direction_gemm = 2 * B * (config.layer_input_size(layer) + R) * G * H + 2 * B * H * P
        gemm += per_direction_gemm * config.num_directions
        pointwise += B * H * pointwise_per_unit * config.num_directions
    return Flops(gemm, pointwise, 2 * gemm, 2 * pointwise)


def sequence_flops(config: RNNConfig, seq_len: int, batch_size: int) -> Flops:
    """FLOPs of a batch of `batch_size` sequences of `seq_len` steps (every row active at every
    step); see `packed_flops` for sequences of unequal lengths."""
    T = checks.positive_int("seq_len", seq_len)
    B = checks.positive_int("batch_size", batch_size)
    return _sequences_flops(config, T * B, B)


def packed_flops(config: RNNConfig, lengths: Iterable[int]) -> Flops:
    """FLOPs of a PackedSequence of sequences of `lengths`: linear in the rows processed, sum(L_b),
    less the first step's dH_prev of each sequence.

    In the reverse direction sequences start at different steps; an implementation that forms
    dH_prev for the rows of a late starter's h_0 inside a longer product (the reference backend
    does) computes more than this count."""
    try:
        lengths = list(lengths)
    except TypeError:
        raise TypeError(f"lengths: expected a list of ints, got {type(lengths).__name__}") from None
    if not lengths:
        raise ValueError("lengths: expected at least one sequence length, got none")
    rows = sum(checks.positive_int(f"lengths[{k}]", L) for k, L in enumerate(lengths))
    return _sequences_flops(config, rows, len(lengths))


def _sequences_flops(config: RNNConfig, rows: int, sequences: int) -> Flops:
    # FLOPs are linear in the rows, so one "step" of all of them is the whole pass, less the
    # product dH_0 = dGates U (R-wide h_0) of each sequence, layer and direction: h_0 needs no gradient.
    flops = step_flops(config, rows)
    no_dh0 = (2 * sequences * config.recurrent_size * config.num_gates * config.hidden_size
              * config.num_layers * config.num_directions)
    return replace(flops, backward_gemm=flops.backward_gemm - no_dh0)


@dataclass(frozen=True)
class MemoryRow:
    what: str
    floats: int


def _saved_per_unit(config: RNNConfig) -> list[tuple[str, int]]:
    """Floats saved per step, batch row, layer and direction, beyond the layer input."""
    H, R, G = config.hidden_size, config.recurrent_size, config.num_gates
    spec = CELLS[config.cell]
    rows: list[tuple[str, int]] = []
    if config.cell.startswith("rnn"):
        rows.append(("hidden states h_t (layer outputs)", R))  # phi' is read off h_t itself
        return rows
    if config.cell == "layernorm":
        # The norms' backward reads the normalised projections; the gates are recomputed from them.
        rows.append(("normalised projections LN(W x), LN(U h) (the gates are recomputed)", 2 * G * H))
    else:
        rows.append(("gate activations", G * H))
    if config.cell == "gru":
        rows.append(("GRU recurrent candidate U_n h + b_hn", H))
    if spec.has_cell_state:
        rows.append(("cell states c_t", H))
    rows.append(("hidden states h_t (layer outputs)", R))
    if config.proj_size:
        rows.append(("unprojected o * tanh(c_t) (for dW_hr)", H))
    if config.cell == "layernorm":
        rows.append(("normalised c_t, each norm's rstd and c_t's mean", H + 4))
    return rows


def activation_memory(config: RNNConfig, seq_len: int, batch_size: int) -> list[MemoryRow]:
    """Floats a training forward pass must save for BPTT, summed over layers and directions.

    Assumed saved, for every step t, batch row, layer and direction: the gate activations after
    their nonlinearity (the derivatives sigma' = s(1-s), tanh' = 1-g^2 are read off them), the
    cell state c_t, the output h_t (it is also h_{t-1} of the next step and the next layer's
    input, so it is counted once), with a projection the unprojected o*tanh(c_t), for the GRU
    its U_n h + b_hn. The layer-norm cell saves its two projections normalised instead of the
    gates (the norms' backward reads them, and the gates are recomputed from them), the
    normalised c_t, each norm's rstd and c_t's mean. Also the first layer's input x. Not
    counted: tanh(c_t) (recomputed from c_t), initial states, dropout masks, the bidirectional
    concatenation (a view of saved halves in a fused implementation) and the framework's
    temporaries.
    """
    T = checks.positive_int("seq_len", seq_len)
    B = checks.positive_int("batch_size", batch_size)
    per_step_rows = T * B * config.num_layers * config.num_directions
    rows = [MemoryRow("layer-0 input x", T * B * config.input_size)]
    rows += [MemoryRow(what, per_step_rows * n) for what, n in _saved_per_unit(config)]
    return rows


def saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """What `activation_memory` models, measured: the bytes of the storages autograd saves in a
    forward of `module` on `x`, seen through `torch.autograd.graph.saved_tensors_hooks`, a storage
    counted once however many views of it are saved; the parameters and the input left out (the
    caller holds them anyway)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        module(x)
    held = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return sum(n for ptr, n in sizes.items() if ptr not in held)


def dtype_size(dtype: str) -> int:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {list(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype].itemsize
