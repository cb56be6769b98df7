"""What a training forward saves for the backward, per implementation, against `lstmkit.costs`.

usage: python benchmarks/saved_memory.py [SHAPE ...]     (default: T100,B32,I256,H512 stacks)

SHAPE is T,B,I,H with optional ,L<layers>, ,bi and ,<cell> (T100,B32,I256,H512,L3,layernorm).
Every tensor autograd saves is seen through `torch.autograd.graph.saved_tensors_hooks`; a
storage is counted once, however many views of it are saved, and the parameters and the input
are left out (the caller holds them anyway). Deterministic: sizes, not times. Prints markdown.
"""
import sys

import torch

import lstmkit
from lstmkit import costs
from lstmkit.costs import RNNConfig

DEFAULT = ["T100,B32,I256,H512", "T100,B32,I256,H512,L2", "T100,B32,I256,H512,L3",
           "T100,B32,I256,H512,L2,bi", "T100,B32,I256,H512,L3,layernorm"]


def parse(shape: str) -> dict:
    out = dict(num_layers=1, bidirectional=False, cell="lstm")
    for part in shape.split(","):
        if part == "bi":
            out["bidirectional"] = True
        elif part[0] in "TBIHL" and part[1:].isdigit():
            out[part[0]] = int(part[1:])
        else:
            out["cell"] = part
    out["num_layers"] = out.pop("L", 1)
    return out


def saved_mib(module: torch.nn.Module, x: torch.Tensor) -> float:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        module(x)
    held = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return sum(n for ptr, n in sizes.items() if ptr not in held) / 2**20


def main(shapes: list[str]) -> None:
    print("| shape | nn.LSTM | lstmkit reference | lstmkit numba | lstmkit.costs |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        s = parse(shape)
        T, B, I, H = s.pop("T"), s.pop("B"), s.pop("I"), s.pop("H")
        torch.manual_seed(0)
        x = torch.randn(T, B, I, requires_grad=True)
        row = []
        if s["cell"] == "lstm":
            row.append(saved_mib(torch.nn.LSTM(I, H, s["num_layers"], bidirectional=s["bidirectional"]), x))
        else:
            row.append(None)
        for backend in ("reference", "numba"):
            row.append(saved_mib(lstmkit.LSTM(I, H, **s, backend=backend), x))
        config = RNNConfig(I, H, **s)
        floats = sum(m.floats for m in costs.activation_memory(config, T, B)[1:])  # without x, as above
        row.append(floats * 4 / 2**20)
        print(f"| {shape} | " + " | ".join("-" if v is None else f"{v:.1f} MiB" for v in row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
