#!/usr/bin/env python
"""Cost of sparse vs dense exact RTRL for the EGRU, and RTRL vs BPTT memory.

For each hidden size N and weight sparsity (density d = 1 - sparsity) an EGRU is (optionally
briefly trained online, then) driven by spiral sequences, and per step we measure

  act     fraction of units emitting an event
  rel     fraction of units whose Jacobian column is non-zero (active OR inside the
          pseudo-derivative support): what exact sparse RTRL has to propagate
  M_nnz   non-zero fraction of the influence matrix (relative to the dense N x P one)
  MAC     multiply-adds of the RTRL update (J M + Mbar + gradient) sparse / dense
  theory  rel * d^2 -- the asymptotic factor (J has rel*d of its entries, M keeps a
          fraction ~d of the parameter columns)
  exact   (N + nnz(J_offdiag)) / N^2 * P_eff / P -- the same count with what the rough
          formula leaves out: the diagonal of J (a 1/N term) and the input weights and
          biases, which are not masked ((D+1)/(dN) of the columns)
  wall    wall time per step sparse / dense (CSR kernel, and "auto" kernel choice)

then the memory per step: influence matrix (RTRL, constant) vs activations stored by BPTT
(growing with the sequence length).

    python benchmarks/rtrl_bench.py [--quick] [--support 1.0] [--threads 1]
    python benchmarks/rtrl_bench.py --smoke     # seconds: N = 8, 2 sparsities, 1 sequence
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from hpccl.rtrl import (BPTTLearner, EGRUNet, OnlineTrainer, RTRLLearner,  # noqa: E402
                        spiral_task)


def make_net(n, ws, args):
    return EGRUNet(2, n, 2, seed=args.seed, weight_sparsity=ws, input_gain=args.input_gain,
                   pseudo_support=args.support)


def drive(learner, seqs, collect=True):
    """Run sequences through a learner; per-step stats and median wall time per step."""
    stats, times = [], []
    for x, y in seqs:
        learner.reset()
        for t in range(x.shape[0]):
            t0 = time.perf_counter()
            out = learner.step(x[t], y if t == x.shape[0] - 1 else None)
            times.append(time.perf_counter() - t0)
            if collect:
                stats.append(out.stats)
        learner.flush()
    return stats, statistics.median(times)


def mean(stats, key):
    return sum(s[key] for s in stats) / len(stats)


def cost_table(args):
    task = spiral_task(512, seed=args.seed)
    seqs = list(task.stream(args.sequences, seed=args.seed + 1))
    hdr = (f"{'N':>3} {'spars':>5} {'d':>4} | {'act':>5} {'rel':>5} {'M_nnz':>6} | "
           f"{'MAC/step dense':>14} {'sparse':>10} {'MAC ratio':>9} {'theory':>8} {'exact':>8} "
           f"{'MAC/theory':>10} {'MAC/exact':>9} | {'ms dense':>8} {'ms csr':>7} {'ms auto':>7} "
           f"{'wall csr':>8} {'wall auto':>9}")
    print(hdr)
    print("-" * len(hdr))
    rows = []
    for n in args.sizes:
        for ws in args.sparsities:
            net = make_net(n, ws, args)
            if args.train_sequences:
                OnlineTrainer(net, "rtrl_sparse", lr=args.lr, spmm="auto", track_nnz=False).run(
                    task.stream(args.train_sequences, seed=args.seed + 2))
            d = net.cell.density
            sp = RTRLLearner(net, sparse=True, track_nnz=True)
            st, _ = drive(sp, seqs)
            dn = RTRLLearner(net, sparse=False, track_nnz=False)
            st_d, _ = drive(dn, seqs)
            # timing runs without the non-zero count (it is a full extra pass over M)
            _, t_dense = drive(RTRLLearner(net, sparse=False, track_nnz=False), seqs, False)
            _, t_csr = drive(RTRLLearner(net, sparse=True, track_nnz=False), seqs, False)
            _, t_auto = drive(RTRLLearner(net, sparse=True, track_nnz=False, spmm="auto"),
                              seqs, False)
            act, rel, nnz = mean(st, "active"), mean(st, "relevant"), mean(st, "influence_nnz")
            mac_s, mac_d = mean(st, "macs"), mean(st_d, "macs")
            ratio = mac_s / mac_d
            theory = rel * d * d
            L = sp.layout
            # expected entries of J's off-diagonal part: mask entries in relevant columns
            exact = (n + rel * d * n * n) / (n * n) * L.P / L.P_dense
            rows.append((n, ws, ratio, theory, exact, t_csr / t_dense, t_auto / t_dense))
            print(f"{n:>3} {ws:>5.2f} {d:>4.2f} | {act:>5.2f} {rel:>5.2f} {nnz:>6.3f} | "
                  f"{mac_d:>14.3e} {mac_s:>10.3e} {ratio:>9.4f} {theory:>8.4f} {exact:>8.4f} "
                  f"{ratio / theory:>10.2f} {ratio / exact:>9.2f} | {t_dense * 1e3:>8.3f} "
                  f"{t_csr * 1e3:>7.3f} {t_auto * 1e3:>7.3f} {t_csr / t_dense:>8.3f} "
                  f"{t_auto / t_dense:>9.3f}", flush=True)
    return rows


def memory_table(args):
    print(f"\n{'N':>3} {'spars':>5} {'T':>6} | {'RTRL dense M':>12} {'RTRL sparse M':>13} | "
          f"{'BPTT stored':>11} {'BPTT/step':>9} {'BPTT/sparse':>11}")
    for n in args.mem_sizes:
        for ws in (0.0, 0.9):
            for T in args.seq_lens:
                task = spiral_task(4, seq_len=T, seed=args.seed)
                x, y = next(iter(task.stream(1)))
                net = make_net(n, ws, args)
                b = BPTTLearner(net)
                b.reset()
                for t in range(T):
                    out = b.step(x[t], y if t == T - 1 else None)
                stored = out.stats["mem_bytes"]
                b.flush()
                m_d = RTRLLearner(net, sparse=False, track_nnz=False).influence_bytes()
                m_s = RTRLLearner(net, sparse=True, track_nnz=False).influence_bytes()
                print(f"{n:>3} {ws:>5.2f} {T:>6} | {m_d:>12,} {m_s:>13,} | {stored:>11,} "
                      f"{stored / T:>9,.0f} {stored / m_s:>11.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sequences and shorter memory sweep")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9])
    ap.add_argument("--support", type=float, default=1.0, help="pseudo-derivative support width")
    ap.add_argument("--input-gain", type=float, default=3.0)
    ap.add_argument("--train-sequences", type=int, default=None,
                    help="online sparse-RTRL training before measuring (default 0 quick, 100 full)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--sequences", type=int, default=None, help="measured sequences (17 steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="seconds: N = 8, sparsity 0 and 0.8, one "
                    "training and one measured sequence, T = 17 (the test suite: the same tables)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes, args.sparsities, args.sequences, args.train_sequences = [8], [0.0, 0.8], 1, 1
    torch.set_num_threads(args.threads)
    if args.sequences is None:
        args.sequences = 2 if args.quick else 6
    if args.train_sequences is None:
        args.train_sequences = 0 if args.quick else 100
    args.seq_lens = [17] if args.smoke else [17, 100] if args.quick else [17, 100, 1000]
    args.mem_sizes = [max(args.sizes)] if args.quick or args.smoke else args.sizes
    print(f"# torch {torch.__version__}, {args.threads} thread(s), float32, spiral input, "
          f"pseudo-derivative support {args.support}, trained {args.train_sequences} sequences "
          f"before measuring, {args.sequences} x 17 steps measured")
    rows = cost_table(args)
    bad_t = [r for r in rows if r[2] > 1.5 * r[3] or r[2] < r[3] / 1.5]
    bad_e = [r for r in rows if r[2] > 1.5 * r[4] or r[2] < r[4] / 1.5]
    print(f"\nMAC ratio within 1.5x of rel*d^2: {len(rows) - len(bad_t)}/{len(rows)} configs"
          + (f" (outside: {', '.join(f'N={r[0]} s={r[1]}' for r in bad_t)})" if bad_t else ""))
    print(f"MAC ratio within 1.5x of exact structural count: {len(rows) - len(bad_e)}/{len(rows)}")
    wall_ok = [r for r in rows if r[5] <= 1.5 * r[3]]
    print(f"wall-time ratio (csr) within 1.5x of rel*d^2: {len(wall_ok)}/{len(rows)}")
    memory_table(args)


if __name__ == "__main__":
    main()
