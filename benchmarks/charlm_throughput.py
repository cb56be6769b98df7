"""Character-LM training throughput at the d2l book's settings, four implementations side by side.

    python benchmarks/charlm_throughput.py [--rounds 7] [--steps 20] [--threads N]

d2l settings (sec. 9.5/10.1): one-hot input over the d2l Time Machine vocabulary (28 symbols in the
book, 27 here: no <unk>), one LSTM layer of 256 units, batch 32, 35 time steps, sequential
partitioning with the state carried (detached), SGD lr 1 with gradient clipping at norm 1.
One training step = forward, cross-entropy, backward, clip, update. The models:

  scratch        d2l's own from-scratch LSTM (ch. 10.1, "Implementation from Scratch"):
                 fourteen parameter tensors, per step one product per gate and input (8) and
                 the output layer, in a Python loop. The baseline of the issue's bar.
  scratch-fused  the same loop with the four gates fused into one [V, 4H] and one [H, 4H]
                 product per step: a stronger from-scratch baseline, shown for comparison
  torch.nn.LSTM  nn.LSTM + nn.Linear
  lstmkit.LSTM   the same model on lstmkit.LSTM(backend="auto")

The implementations are timed in interleaved rounds (each round times every model for --steps
steps after a warm-up), so load on a shared machine hits them alike; the table gives medians of
the rounds' tokens/s, and medians of the per-round speed ratios (to torch.nn.LSTM and to scratch,
each measured in the same round).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lstmkit
from lstmkit.kernels import AUTO_PREFERENCE, BACKENDS, resolve_backend

TIMEMACHINE = Path(__file__).resolve().parents[1].parent / "shared/data/timemachine/timemachine.txt"
H, B, T = 256, 32, 35


def corpus() -> tuple[torch.Tensor, int, str]:
    if TIMEMACHINE.is_file():
        from lstmkit.apps.charlm.corpus import preprocess
        text = preprocess(TIMEMACHINE.read_text(), "d2l")
        vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(vocab)}
        return torch.tensor([index[c] for c in text]), len(vocab), "the d2l Time Machine"
    return torch.randint(0, 28, (170_580,), generator=torch.Generator().manual_seed(0)), 28, "random ids"


class Scratch:
    """d2l's from-scratch LSTM (ch. 10.1), as the book writes it: one weight per gate and input."""

    def __init__(self, vocab: int) -> None:
        def p(*shape):
            return (torch.randn(*shape) * 0.01).requires_grad_()

        def gate():
            return p(vocab, H), p(H, H), torch.zeros(H, requires_grad=True)
        self.V = vocab
        self.gates = [gate() for _ in range(4)]  # input, forget, output, candidate
        self.W_hq, self.b_q = p(H, vocab), torch.zeros(vocab, requires_grad=True)
        self.params = [t for g in self.gates for t in g] + [self.W_hq, self.b_q]

    def __call__(self, X, state):  # X (B, T) ids
        (W_xi, W_hi, b_i), (W_xf, W_hf, b_f), (W_xo, W_ho, b_o), (W_xc, W_hc, b_c) = self.gates
        H_, C = state if state is not None else (torch.zeros(X.shape[0], H), torch.zeros(X.shape[0], H))
        outputs = []
        for x in F.one_hot(X.T, self.V).float():  # T x (B, V)
            i = torch.sigmoid((x @ W_xi) + (H_ @ W_hi) + b_i)
            f = torch.sigmoid((x @ W_xf) + (H_ @ W_hf) + b_f)
            o = torch.sigmoid((x @ W_xo) + (H_ @ W_ho) + b_o)
            c_tilda = torch.tanh((x @ W_xc) + (H_ @ W_hc) + b_c)
            C = f * C + i * c_tilda
            H_ = o * torch.tanh(C)
            outputs.append(H_ @ self.W_hq + self.b_q)
        return torch.cat(outputs), (H_, C)  # (T*B, V), time-major like d2l


class ScratchFused:
    """The from-scratch loop with the four gates fused into one weight per input."""

    def __init__(self, vocab: int) -> None:
        def p(*shape):
            return (torch.randn(*shape) * 0.01).requires_grad_()
        self.V = vocab
        self.W_x, self.W_h, self.b = p(vocab, 4 * H), p(H, 4 * H), torch.zeros(4 * H, requires_grad=True)
        self.W_q, self.b_q = p(H, vocab), torch.zeros(vocab, requires_grad=True)
        self.params = [self.W_x, self.W_h, self.b, self.W_q, self.b_q]

    def __call__(self, X, state):  # X (B, T) ids
        h, c = state if state is not None else (torch.zeros(X.shape[0], H), torch.zeros(X.shape[0], H))
        outputs = []
        for x in F.one_hot(X.T, self.V).float():  # T x (B, V)
            i, f, g, o = (x @ self.W_x + h @ self.W_h + self.b).chunk(4, 1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h @ self.W_q + self.b_q)
        return torch.cat(outputs), (h, c)  # (T*B, V), time-major like d2l


class Module(nn.Module):
    def __init__(self, vocab: int, rnn: nn.Module) -> None:
        super().__init__()
        self.V, self.rnn, self.out = vocab, rnn, nn.Linear(H, vocab)

    def __call__(self, X, state):
        y, state = self.rnn(F.one_hot(X.T, self.V).float(), state)  # (T, B, H)
        return self.out(y.reshape(-1, H)), state


def make(name: str, vocab: int):
    torch.manual_seed(0)
    if name in ("scratch", "scratch-fused"):
        m = Scratch(vocab) if name == "scratch" else ScratchFused(vocab)
        return m, m.params
    rnn = nn.LSTM(vocab, H) if name == "torch.nn.LSTM" else lstmkit.LSTM(vocab, H, backend="auto")
    m = Module(vocab, rnn)
    return m, list(m.parameters())


def run(model, params, batches, steps: int) -> float:
    """Seconds for `steps` training steps (forward, loss, backward, clip, SGD) on the next batches."""
    state = None
    t0 = time.perf_counter()
    for _ in range(steps):
        X, Y = next(batches)
        if state is not None:
            state = tuple(s.detach() for s in state)
        logits, state = model(X, state)
        loss = F.cross_entropy(logits, Y.T.reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        with torch.no_grad():
            for p in params:
                p -= 1.0 * p.grad
    return time.perf_counter() - t0


def batch_stream(ids: torch.Tensor):
    """d2l's sequential partitioning, epoch after epoch."""
    n = (len(ids) - 1) // B * B
    xs, ys = ids[:n].reshape(B, -1), ids[1: n + 1].reshape(B, -1)
    while True:
        for i in range(0, xs.shape[1] - T + 1, T):
            yield xs[:, i: i + T], ys[:, i: i + T]


def auto_backend_name() -> str:
    fn = resolve_backend("auto", "cpu", "lstm")
    for name in (*AUTO_PREFERENCE.get("cpu", ()), "reference"):
        try:
            if resolve_backend(name, "cpu", "lstm") is fn:
                return name
        except Exception:
            continue
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians over them)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per model per round")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per model before the rounds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids, vocab, source = corpus()
    names = ["scratch", "scratch-fused", "torch.nn.LSTM", "lstmkit.LSTM"]
    models = {n: make(n, vocab) for n in names}
    streams = {n: batch_stream(ids) for n in names}
    for n in names:
        run(*models[n], streams[n], args.warmup)
    rates: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}  # speed vs torch.nn.LSTM, per round
    vs_scratch: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        secs = {n: run(*models[n], streams[n], args.steps) for n in names}
        for n in names:
            rates[n].append(args.steps * B * T / secs[n])
            ratios[n].append(secs["torch.nn.LSTM"] / secs[n])
            vs_scratch[n].append(secs["scratch"] / secs[n])
    print(f"d2l char LM training step (one-hot {vocab} -> LSTM {H} -> {vocab}, batch {B} x {T} steps, "
          f"SGD + clip), data: {source}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"lstmkit backend auto = {auto_backend_name()} (known: {', '.join(BACKENDS)}); "
          f"{args.rounds} interleaved rounds x {args.steps} steps, medians\n")
    print("| implementation | tokens/s | ms/step | speed vs torch.nn.LSTM | speed vs scratch |")
    print("|---|---|---|---|---|")
    for n in names:
        r = statistics.median(rates[n])
        print(f"| {n} | {r:,.0f} | {B * T / r * 1000:.1f} | {statistics.median(ratios[n]):.2f}x | "
              f"{statistics.median(vs_scratch[n]):.2f}x |")


if __name__ == "__main__":
    main()
