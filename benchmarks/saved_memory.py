"""What a training forward saves for the backward, per implementation, against `lstmkit.costs`.

usage: python benchmarks/saved_memory.py [CONFIG ...]     (default: T100,B32,I256,H512 stacks)

What autograd saves is measured by `lstmkit.costs.saved_bytes` (a storage counted once, however
many views of it are saved; the parameters and the input left out). Deterministic: sizes, not
times. Prints markdown.
"""
import argparse
import re

import torch

import lstmkit
from lstmkit import costs
from lstmkit.bench.impls import Shape
from lstmkit.cells import LSTM_CELLS, get_cell
from lstmkit.costs import RNNConfig

DEFAULT = ["T100,B32,I256,H512", "T100,B32,I256,H512,L2", "T100,B32,I256,H512,L3",
           "T100,B32,I256,H512,L2,bi", "T100,B32,I256,H512,L3,layernorm"]


def parse(text: str) -> tuple[Shape, dict]:
    """A `lstmkit bench` shape (T, B, I, H, optional P) plus L<layers>, bi and an LSTM cell name."""
    stack = dict(num_layers=1, bidirectional=False, cell="lstm")
    rest = []
    for token in text.split(","):
        if re.fullmatch(r"L[1-9]\d*", token):
            stack["num_layers"] = int(token[1:])
        elif token == "bi":
            stack["bidirectional"] = True
        elif re.fullmatch(r"[a-z]+", token) and token != "packed":
            stack["cell"] = get_cell(token).name
        else:
            rest.append(token)
    try:
        shape = Shape.parse(",".join(rest))
    except ValueError as e:  # its messages name bench's flag
        raise ValueError(f"CONFIG: {str(e).removeprefix('--shapes: ')}") from None
    if shape.packed:
        raise ValueError(f"CONFIG: the padded layout only, got {text!r}")
    if stack["cell"] not in LSTM_CELLS:
        raise ValueError(f"CONFIG: expected an LSTM cell {list(LSTM_CELLS)}, got {stack['cell']!r}")
    return shape, stack


def saved_mib(module: torch.nn.Module, x: torch.Tensor) -> float:
    return costs.saved_bytes(module, x) / 2**20


def main(configs: list[tuple[str, Shape, dict]]) -> None:
    print("| shape | nn.LSTM | lstmkit reference | lstmkit numba | lstmkit.costs |")
    print("|---|---|---|---|---|")
    for label, shape, stack in configs:
        torch.manual_seed(0)
        x = torch.randn(shape.T, shape.B, shape.I, requires_grad=True)
        sizes = dict(input_size=shape.I, hidden_size=shape.H, proj_size=shape.P, num_layers=stack["num_layers"],
                     bidirectional=stack["bidirectional"])
        row = [saved_mib(torch.nn.LSTM(**sizes), x) if stack["cell"] == "lstm" else None]
        for backend in ("reference", "numba"):
            row.append(saved_mib(lstmkit.LSTM(**sizes, cell=stack["cell"], backend=backend), x))
        config = RNNConfig(**sizes, cell=stack["cell"])
        floats = sum(m.floats for m in costs.activation_memory(config, shape.T, shape.B)[1:])  # without x, as above
        row.append(floats * 4 / 2**20)
        print(f"| {label} | " + " | ".join("-" if v is None else f"{v:.1f} MiB" for v in row) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", metavar="CONFIG", default=DEFAULT,
                        help="a `lstmkit bench` shape (T100,B32,I256,H512[,P128]) with optional ,L<layers>, "
                             ",bi and ,<cell> (peephole, cifg, layernorm): e.g. T100,B32,I256,H512,L3,layernorm "
                             "(default: the BENCHMARKS.md table)")
    args = parser.parse_args()
    try:
        configs = [(text, *parse(text)) for text in args.configs]
    except ValueError as e:
        parser.error(str(e))
    main(configs)
