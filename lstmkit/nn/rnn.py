"""`LSTM`, `GRU` and `RNN` modules: drop-ins for their `torch.nn` namesakes.

Same constructor arguments, parameter names and shapes, inputs and outputs as torch
(including PackedSequence and unbatched input), so `load_state_dict` works both ways. On top,
`cell=` picks an LSTM variant and `backend=` the implementation (see `lstmkit.kernels`).
Inside everything is time-major `(T, B, ·)`; `batch_first` is handled here and only here.
"""

from __future__ import annotations

import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from lstmkit.cells import LSTM_CELLS, CellSpec, get_cell
from lstmkit.kernels import check_backend_name, preload, resolve_backend
from lstmkit.nn import checks
from lstmkit.nn.checks import init_parameters

# torch.nn.RNNBase.mode of each cell; every LSTM cell is "LSTM"
_MODES = {"gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}


class RecurrentBase(nn.Module):
    """Stacked, optionally bidirectional recurrent layers of one cell type."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 backend: str = "auto") -> None:
        super().__init__()
        self.spec: CellSpec = get_cell(cell)
        self.cell = cell
        self.input_size = checks.positive_int("input_size", input_size)
        self.hidden_size = checks.positive_int("hidden_size", hidden_size)
        self.num_layers = checks.positive_int("num_layers", num_layers)
        self.dropout = checks.dropout_rate(dropout)
        if self.dropout and self.num_layers == 1:
            warnings.warn("dropout acts between layers, after all but the last, so it expects num_layers > 1, "
                          f"got dropout={self.dropout} and num_layers=1", UserWarning, stacklevel=3)
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral):
            raise TypeError(f"proj_size: expected an int, got {type(proj_size).__name__}")
        proj_size = int(proj_size)
        if proj_size < 0 or proj_size >= hidden_size:
            raise ValueError(f"proj_size: expected 0 <= proj_size < hidden_size={hidden_size}, got {proj_size}")
        if proj_size and not self.spec.has_cell_state:
            raise ValueError(f"proj_size: only LSTM cells have a projection, got proj_size={proj_size} for cell={cell!r}")
        self.proj_size = proj_size
        self.bias = checks.boolean("bias", bias)
        self.batch_first = checks.boolean("batch_first", batch_first)
        self.bidirectional = bool(bidirectional)  # torch takes any truth value here
        self.backend = check_backend_name(backend)
        self.mode = _MODES.get(cell, "LSTM")

        factory = {"device": device, "dtype": dtype}
        gh = self.spec.num_gates * hidden_size
        out_size = proj_size or hidden_size
        # torch's bookkeeping of the weights' names, which weight-drop wrappers and pruning code
        # read: per layer and direction in torch's order, then the cell's own parameters
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            shapes = {"weight_ih": (gh, input_size if layer == 0 else out_size * self.num_directions),
                      "weight_hh": (gh, out_size)}
            if self.bias:
                shapes.update(bias_ih=(gh,), bias_hh=(gh,))
            if proj_size:
                shapes["weight_hr"] = (proj_size, hidden_size)
            for extra in self.spec.extra_params:
                shapes[extra.name] = (gh if extra.width == "GH" else hidden_size,)
            for suffix in self._suffixes(layer):
                for name, shape in shapes.items():
                    self.register_parameter(name + suffix, nn.Parameter(torch.empty(*shape, **factory)))
                self._all_weights.append([name + suffix for name in shapes])
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self._init_flat_weights()
        self.reset_parameters()
        preload(self.backend, self.weight_ih_l0.device.type)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def reset_parameters(self) -> None:
        init_parameters(self, self.spec, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn.LSTM (cuDNN weight packing)."""

    def _init_flat_weights(self) -> None:
        self._flat_weights = [getattr(self, name, None) for name in self._flat_weights_names]

    def __setattr__(self, name: str, value) -> None:
        # `_flat_weights` follows a weight replaced by name, as torch's (weight drop, pruning);
        # the forward itself reads the module's attributes, not this list
        if name in self.__dict__.get("_flat_weights_names", ()):
            self._flat_weights[self._flat_weights_names.index(name)] = value
        super().__setattr__(name, value)

    def register_parameter(self, name: str, param: nn.Parameter | None) -> None:
        super().register_parameter(name, param)  # not through __setattr__
        if name in self.__dict__.get("_flat_weights_names", ()):
            self._init_flat_weights()

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._init_flat_weights()  # .to() and the like may put new parameters in place
        return module

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Each layer and direction's parameters, in torch's order (then the cell's own)."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def layer_params(self, layer: int, direction: int) -> dict[str, Tensor]:
        """The parameters of one layer and direction by their base names (the backends' `params`)."""
        suffix = self._suffixes(layer)[direction]
        return {name[:-len(suffix)]: getattr(self, name)
                for name in self._all_weights[layer * self.num_directions + direction]}

    def extra_repr(self) -> str:
        """torch's (what differs from its defaults, in its order), then what differs in lstmkit's
        keywords: a module built as torch's prints as torch's does, but for RNN's nonlinearity
        'relu', which torch's leaves out."""
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("proj_size", 0), ("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.cell == "rnn_relu":
            s += ", nonlinearity='relu'"
        elif self.cell not in ("lstm", "gru", "rnn_tanh"):  # each class's own cell
            s += f", cell={self.cell!r}"
        return s + ("" if self.backend == "auto" else f", backend={self.backend!r}")

    # --- forward -----------------------------------------------------------------------

    def _state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        ld = self.num_layers * self.num_directions
        shapes = [(ld, batch, self.proj_size or self.hidden_size)]
        if self.spec.has_cell_state:
            shapes.append((ld, batch, self.hidden_size))
        return shapes

    def _dropout(self, y: Tensor, batch_sizes: Tensor | None) -> Tensor:
        """Dropout between layers, drawn as torch's: on packed input over the packed rows (N, D*H),
        so that one seed drops the same units here and in torch.nn.LSTM."""
        if batch_sizes is None:
            return F.dropout(y, self.dropout, training=True)
        keep = F.dropout(y.new_ones(int(batch_sizes.sum()), y.shape[-1]), self.dropout, training=True)  # (N, D*H)
        return y * pad_packed_sequence(PackedSequence(keep, batch_sizes))[0]  # (T, B, D*H), 0 past each length

    def _forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, ...] | None):
        dtype = self.weight_ih_l0.dtype
        sorted_indices = unsorted_indices = batch_sizes = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            checks.float_tensor("input", data, dtype)
            if data.dim() != 2 or data.shape[-1] != self.input_size:
                raise ValueError(f"input: expected PackedSequence data of shape (N, {self.input_size}), got {tuple(data.shape)}")
            x, _ = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I), sorted by length
            unbatched = False
        else:
            checks.float_tensor("input", input, dtype)
            if input.dim() not in (2, 3):
                raise ValueError(f"input: expected a 3-D (batched) or 2-D (unbatched) tensor, got {input.dim()}-D of shape {tuple(input.shape)}")
            if input.shape[-1] != self.input_size:
                raise ValueError(f"input: expected last dimension input_size={self.input_size}, got {input.shape[-1]}")
            unbatched = input.dim() == 2
            if unbatched:
                x = input.unsqueeze(1)  # (T, 1, I)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        if x.shape[0] == 0:
            raise ValueError(f"input: expected a sequence length > 0, got input of shape {tuple(input.shape)}")
        batch = x.shape[1]
        names = ["hx"] if not self.spec.has_cell_state else ["h_0", "c_0"]
        shapes = self._state_shapes(batch)
        if hx is None:
            state = [x.new_zeros(s) for s in shapes]
        else:
            if len(hx) != len(shapes):
                raise ValueError(f"hx: expected {len(shapes)} tensor(s) {tuple(names)}, got {len(hx)}")
            state = []
            for name, h, s in zip(names, hx, shapes):
                checks.float_tensor(name, h, dtype)
                checks.device(name, h, x.device)
                if unbatched:
                    checks.shape(name, h, (s[0], s[2]))
                    h = h.unsqueeze(1)
                checks.shape(name, h, s)
                if sorted_indices is not None:
                    h = h.index_select(1, sorted_indices)
                state.append(h)
        checks.device("input", x, self.weight_ih_l0.device, what="the parameters'")
        layer_fn = resolve_backend(self.backend, x.device.type, self.cell, x.dtype)

        finals: list[list[Tensor]] = [[] for _ in shapes]
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            # only the last layer's y, unpacked and in one direction, reaches the caller as it is
            # (or as a view): other outputs are read by the next layer, torch.cat or the packing
            exposed = layer == self.num_layers - 1 and self.num_directions == 1 and batch_sizes is None
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                y, final = layer_fn(self.spec, layer_input, tuple(s[k] for s in state),
                                    self.layer_params(layer, d), batch_sizes, d == 1, exposed=exposed)
                outputs.append(y)
                for acc, f in zip(finals, final):
                    acc.append(f)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)  # (T, B, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = self._dropout(layer_input, batch_sizes)
        # each (L*D, B, ·), a tensor of its own (not a view) as torch's: h_n.detach_() must work
        final_state = [torch.stack(acc) for acc in finals]

        if batch_sizes is not None:
            steps = batch_sizes.tolist()
            data = torch.cat([layer_input[t, :b] for t, b in enumerate(steps)])  # (N, D*H)
            output = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                final_state = [s.index_select(1, unsorted_indices) for s in final_state]
        elif unbatched:
            output = layer_input.squeeze(1)
            final_state = [s.squeeze(1) for s in final_state]
        else:
            output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return output, final_state


class LSTM(RecurrentBase):
    """Drop-in for `torch.nn.LSTM`, plus `cell="lstm"|"peephole"|"cifg"|"layernorm"` and `backend=`.

    forward(input, (h_0, c_0)=None) -> output, (h_n, c_n), exactly as torch.nn.LSTM.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, cell: str = "lstm",
                 backend: str = "auto") -> None:
        if cell not in LSTM_CELLS:
            raise ValueError(f"cell: expected one of {list(LSTM_CELLS)}, got {cell!r}")
        super().__init__(cell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, backend)

    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None):
        if hx is not None:
            checks.state_pair("hx", hx, "(h_0, c_0)")
        output, (h_n, c_n) = self._forward(input, hx)
        return output, (h_n, c_n)


class _SingleStateRNN(RecurrentBase):
    def forward(self, input, hx: Tensor | None = None):
        if hx is not None and not isinstance(hx, Tensor):
            raise TypeError(f"hx: expected a tensor h_0, got {type(hx).__name__}")
        output, (h_n,) = self._forward(input, None if hx is None else (hx,))
        return output, h_n


class GRU(_SingleStateRNN):
    """Drop-in for `torch.nn.GRU`: forward(input, h_0=None) -> output, h_n."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, backend: str = "auto") -> None:
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, backend)


class RNN(_SingleStateRNN):
    """Drop-in for `torch.nn.RNN` (Elman): forward(input, h_0=None) -> output, h_n."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None, *,
                 backend: str = "auto") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype, backend)
