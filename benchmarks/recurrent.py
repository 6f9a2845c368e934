"""Time the from-scratch RNN and LSTM against torch.nn.RNN / torch.nn.LSTM with the same weights.

Prints forward and forward+backward times (median of interleaved repeats) and the ratio
rnncap / torch.nn. Usage: python benchmarks/recurrent.py [--device cuda] [--threads 2]
[--cuda-graphs] (rnncap's sequence loops replayed as CUDA graphs; step() is not affected)
"""

from __future__ import annotations

import argparse
import statistics

import torch

from _timing import timed
from rnncap.nn import LSTM, RNN

# (N, T, D, H): the training size of the issue, a smaller one, and N=1 single-step decoding
# (T=1: rnncap's step() against torch.nn on a one-step sequence with a given state)
SIZES = [(128, 16, 256, 512), (32, 16, 128, 256), (1, 1, 256, 512)]


def bench(
    cell: str,
    size: tuple[int, int, int, int],
    device: torch.device,
    repeats: int,
    inner: int | None = None,
    cuda_graphs: bool = False,
):
    """Seconds (ours_fwd, ref_fwd, ours_fwdbwd, ref_fwdbwd) measured interleaved, as two lists:
    the medians and the minima (the minimum is the steadier one on a shared, busy machine)."""
    N, T, D, H = size
    torch.manual_seed(0)
    if cell == "lstm":
        ref = torch.nn.LSTM(D, H, batch_first=True).to(device)
        ours = LSTM.from_torch(ref)
    else:
        ref = torch.nn.RNN(D, H, batch_first=True).to(device)
        ours = RNN.from_torch(ref)
    ours.cuda_graphs = cuda_graphs
    x = torch.randn(N, T, D, device=device, requires_grad=True)
    dout = torch.randn(N, T, H, device=device)
    state = [torch.randn(N, H, device=device) for _ in range(2 if cell == "lstm" else 1)]

    def call_ours():
        if T > 1:
            return ours(x)
        # one decoding step: the cell's step() on (N, D), as a decoder uses it
        out = ours.step(x[:, 0], *state)
        return (out[0] if cell == "lstm" else out).unsqueeze(1)

    def call_ref():
        if T > 1:
            return ref(x)[0]
        hx = tuple(s.unsqueeze(0) for s in state)
        return ref(x, hx if cell == "lstm" else hx[0])[0]

    def ours_fwd():
        with torch.no_grad():
            call_ours()

    def ref_fwd():
        with torch.no_grad():
            call_ref()

    def ours_train():
        call_ours().backward(dout)

    def ref_train():
        call_ref().backward(dout)

    fns = [ours_fwd, ref_fwd, ours_train, ref_train]
    if inner is None:
        inner = max(1, 2000 // (N * T))  # tiny problems: time several calls per sample

    def run(fn):
        return timed(lambda: [fn() for _ in range(inner)], device) / inner

    for fn in fns:  # warm-up
        run(fn)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            times[k].append(run(fns[k]))
    return [statistics.median(t) for t in times], [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per case (default 15)")
    parser.add_argument("--cells", default="rnn,lstm", help="comma-separated: rnn,lstm")
    parser.add_argument("--sizes", default="all", help="all, or one N,T,D,H (e.g. 128,16,256,512)")
    parser.add_argument(
        "--inner",
        type=int,
        default=None,
        help="calls per timed sample (default: 2000 // (N*T), at least 1; a GPU needs fewer)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="rnncap's RNN/LSTM replay their sequence loops as CUDA graphs (CUDA only)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES if args.sizes == "all" else [tuple(int(v) for v in args.sizes.split(","))]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {name}, {args.threads} threads; median of "
        f"{args.repeats} interleaved runs (ms); ratio = rnncap / torch.nn (median, and minimum)"
        + ("; rnncap with CUDA graphs" if args.cuda_graphs and device.type == "cuda" else "")
    )
    header = (
        f"{'cell':5} {'N':>4} {'T':>3} {'D':>4} {'H':>4} | {'fwd rnncap':>10} "
        f"{'fwd torch':>10} {'ratio':>5} {'(min)':>5} | {'f+b rnncap':>10} "
        f"{'f+b torch':>10} {'ratio':>5} {'(min)':>5}"
    )
    print(header)
    print("-" * len(header))
    for cell in args.cells.split(","):
        for size in sizes:
            (of, rf, ot, rt), (mof, mrf, mot, mrt) = bench(
                cell, size, device, args.repeats, args.inner, args.cuda_graphs
            )
            N, T, D, H = size
            print(
                f"{cell:5} {N:4d} {T:3d} {D:4d} {H:4d} | {of * 1e3:10.3f} {rf * 1e3:10.3f} "
                f"{of / rf:5.2f} {mof / mrf:5.2f} | {ot * 1e3:10.3f} {rt * 1e3:10.3f} "
                f"{ot / rt:5.2f} {mot / mrt:5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
