#!/usr/bin/env python3
"""PyTorch (eager mode, CPU) training-step throughput of a MiniLM-shaped BERT.

    bert_step_torch.py [THREADS] [--batches 8,32] [--seq 64] [--warmup 3] [--steps 10]
                       [--attn sdpa|eager]

THREADS (default 2) goes to torch.set_num_threads (interop threads: 1).
Prints one JSON line per batch size:

    {"impl":"torch","batch":B,"seq":64,"threads":N,"samples_per_s":x,"step_ms":y, ...}

plus "cpu_ms_per_step", "attn", "loss_first", "loss_last", "torch", "transformers".

The exact step, for a Rust mirror
---------------------------------
Model: transformers.BertModel(config, add_pooling_layer=False) with the
all-MiniLM-L6-v2 config (CONFIG below: vocab 30522, hidden 384, 6 layers, 12
heads, intermediate 1536, exact-erf GELU, max positions 512, 2 token types,
LayerNorm eps 1e-12, hidden and attention dropout 0.1), random init after
torch.manual_seed(0) (transformers' init: N(0, 0.02) weights, zero biases,
LayerNorm weight 1 / bias 0), model.train() (so dropout p=0.1 is active in
the embeddings, attention probabilities, attention output and FFN output, as in
BERT).  Attention: --attn sdpa (default; torch scaled_dot_product_attention)
or eager (explicit softmax(QK^T/8 + mask) V); all-ones attention mask.

MLM head: one nn.Linear(384 -> 30522) with bias, not tied to the word
embeddings, no transform / LayerNorm in between (init: PyTorch default
kaiming-uniform, drawn right after the BertModel from the same seed).

Data (pre-generated before timing, from torch.Generator seeded with 1 + batch):
for each step, input_ids [B, 64] uniform in [1000, 30522) (no [CLS]/[SEP]);
token_type_ids zeros; attention_mask ones.  In every row exactly
M = round(0.15 * seq) = 10 positions (torch.randperm(seq)[:M]) are masked:
their ids are replaced by [MASK] = 103 and their original ids are the labels.

Objective: h = BertModel(...).last_hidden_state [B, 64, 384]; gather the M
masked positions of every row -> [B*M, 384]; logits = head(.) [B*M, 30522];
loss = cross_entropy(logits, labels), mean over the B*M masked positions.  The
head is applied ONLY to the masked positions (so the encoder, not the vocab
projection, dominates the step).

Step: optimizer.zero_grad(set_to_none=True); loss.backward();
torch.optim.AdamW(model + head parameters, lr=1e-4, betas=(0.9, 0.999),
eps=1e-8, weight_decay=0.01; PyTorch defaults besides lr).step().  No grad
clipping, no LR schedule, no AMP: float32 throughout.  --optim picks the
AdamW implementation (same maths): default = torch's choice, which for CPU
tensors is the per-parameter for-loop (slow: about 0.6 s for these 34 M
parameters on 2 busy cores); foreach; fused (about 15x faster on CPU).

Timing: --warmup steps (3) untimed, then --steps (10) timed with
time.perf_counter around the whole loop; step_ms = elapsed / steps * 1000,
samples_per_s = batch * steps / elapsed.  cpu_ms_per_step is the process CPU
time (all threads) per timed step: on a busy machine it is a steadier number
than wall time (ideal: about threads x step_ms).  Run it on an idle machine:
with one other CPU-bound process on 2 cores, the 2 OpenMP threads wait on each
other at every barrier and a step got up to 10x slower (measured).
"""

import argparse
import json
import time

import torch
import transformers
from transformers import BertConfig, BertModel

CONFIG = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
MASK_ID = 103
LR = 1e-4


def make_batches(batch, seq, n, seed):
    g = torch.Generator().manual_seed(seed)
    m = round(0.15 * seq)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, CONFIG["vocab_size"], (batch, seq), generator=g)
        pos = torch.stack([torch.randperm(seq, generator=g)[:m] for _ in range(batch)])  # [B, M]
        labels = ids.gather(1, pos)
        ids = ids.scatter(1, pos, MASK_ID)
        out.append((ids, pos, labels.reshape(-1)))
    return out


def bench(batch, seq, warmup, steps, attn, optim):
    torch.manual_seed(0)
    cfg = BertConfig(**CONFIG)
    cfg._attn_implementation = attn
    model = BertModel(cfg, add_pooling_layer=False)
    head = torch.nn.Linear(CONFIG["hidden_size"], CONFIG["vocab_size"])
    model.train()
    head.train()
    params = list(model.parameters()) + list(head.parameters())
    if optim == "fused":
        opt = torch.optim.AdamW(params, lr=LR, fused=True)
    elif optim == "foreach":
        opt = torch.optim.AdamW(params, lr=LR, foreach=True)
    else:  # torch's choice; for CPU tensors that is the per-parameter for-loop
        opt = torch.optim.AdamW(params, lr=LR)
    data = make_batches(batch, seq, warmup + steps, seed=1 + batch)
    tt = torch.zeros(batch, seq, dtype=torch.long)
    am = torch.ones(batch, seq, dtype=torch.long)

    def step(ids, pos, labels):
        opt.zero_grad(set_to_none=True)
        h = model(input_ids=ids, attention_mask=am, token_type_ids=tt).last_hidden_state
        hm = h.gather(1, pos.unsqueeze(-1).expand(-1, -1, h.shape[-1])).reshape(-1, h.shape[-1])
        loss = torch.nn.functional.cross_entropy(head(hm), labels)
        loss.backward()
        opt.step()
        return loss.item()

    for d in data[:warmup]:
        loss_first = step(*d)
    t0, c0 = time.perf_counter(), time.process_time()
    for d in data[warmup:]:
        loss_last = step(*d)
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    return el, cpu, loss_first, loss_last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("threads", nargs="?", type=int, default=2)
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--optim", default="default", choices=["default", "foreach", "fused"],
                    help="AdamW implementation (default: torch's choice = for-loop on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    for b in (int(x) for x in args.batches.split(",")):
        el, cpu, lf, ll = bench(b, args.seq, args.warmup, args.steps, args.attn, args.optim)
        print(json.dumps({
            "impl": "torch", "batch": b, "seq": args.seq, "threads": args.threads,
            "samples_per_s": round(b * args.steps / el, 3), "step_ms": round(el / args.steps * 1000, 2),
            "cpu_ms_per_step": round(cpu / args.steps * 1000, 2),
            "attn": args.attn, "optim": "adamw_" + args.optim, "loss_first": round(lf, 4), "loss_last": round(ll, 4),
            "torch": torch.__version__, "transformers": transformers.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
