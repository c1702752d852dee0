#!/usr/bin/env python3
"""PyTorch (eager mode, CPU) training-step throughput of our `small` multiway model.

    train_step_torch.py THREADS --step pretrain|vqa [--batch 64] [--steps 20] [--warmup 3]
                        [--optim default|fused] [--answers 40]

THREADS goes to torch.set_num_threads (interop threads: 1); torch.manual_seed(0).
Prints the parameter counts, then one JSON line:

    {"impl":"torch","step":"pretrain","optim":"adamw","threads":N,"batch":B,"steps":S,
     "samples_per_s":x,"ms_per_step":y,"params":n,"loss_first":..,"loss_last":.., ...}

plus "params_encoder", "params_heads", "cpu_ms_per_step", "torch" (and "answers" for vqa).

The exact step, for a Rust mirror
---------------------------------
Model: crates/models/src/multiway.rs with MultiwayConfig::preset("small", AllSpecific):
hidden D=64, 4 layers, 4 heads, FFN 256 (exact-erf GELU), LayerNorm eps 1e-6, pre-LN
blocks (x + attn(norm1(x)); h + ffn(norm2(h))), dropout 0, no LayerScale, final LayerNorm
`encoder.norm`.  Images 3x32x32, patch 8 (16 patches + class token); vocab 1000, 16 text
positions, 3 token types (0 text, 1 image).  Every part (attn q/k/v/out, ffn fc1/fc2,
norm1, norm2) has one copy per expert: vision and text in layers 0-1, vision, text and vl in
the VL layers 2-3.  Attention: q, k, v weights concatenated into one [3D, D] projection per
call (as Attention::forward), scaled_dot_product_attention with a bool key mask
[B, 1, 1, T] (None when nothing is padded, as key_mask).
  - image only (encode_image): patch conv + class token + image_pos + token_type[1],
    vision experts in all 4 layers, final norm;
  - text only (encode_text): LN(word + text_pos + token_type[0]), text experts in all 4
    layers (padded keys masked), final norm;
  - fused (encode_image_text, image type 1): layers 0-1 run the text through the text
    experts and the image through the vision experts separately; layers 2-3 run the
    concatenation [text; image] (T + 17 tokens, key mask [text mask; ones]) through the
    **vl** experts for every token (Block::forward picks one expert per call); final norm.
Init as tch's defaults: Linear and Conv weights Kaiming-uniform with ReLU gain
(bound sqrt(6 / fan_in)), Linear bias U(+-1/sqrt(fan_in)), Conv bias 0, Embedding N(0, 1),
LayerNorm 1 / 0, cls_token and image_pos N(0, 0.02), logit_scale ln(1/0.07).

Heads (crates/models/src/heads.rs): ItcHead(dim 64: text_proj, image_proj D->64, L2-normalise
with clamp 1e-12, logits = t @ i^T * exp(min(logit_scale, ln 100))); Classifier(D -> 2D,
GELU, LN(2D), 2D -> K) on the fused sequence's first token (the text's [CLS]); MlmHead(D ->
D, GELU, LN, D -> vocab) on all T text positions of the fused sequence.

Data (made once before timing, from torch.Generator seeded 1; the same batch every step):
pixels N(0, 1) [B, 3, 32, 32]; text [B, 16]: length L uniform in 8..=16, [CLS]=2 at 0,
ids uniform in [5, 1000) at 1..L-2, [SEP]=3 at L-1, [PAD]=0 after, mask 1 for the first L.
MLM: each word token (not [PAD]/[CLS]/[SEP]) masked with probability 0.15 (at least one per
caption: a random word when none was drawn); masked ids -> [MASK]=4, labels = the original
id there, -100 elsewhere.  VQA soft targets [B, K]: per row one random answer with a score
drawn from {0.3, 0.6, 0.9, 1.0}, 0 elsewhere.

pretrain (loss = ITC + ITM + MLM):
  ITC: image_cls = encode_image(px)[:, 0], text_cls = encode_text(ids)[:, 0];
       logits [text, image]; (CE(logits, arange) + CE(logits^T, arange)) / 2.
  ITM (crates/models/src/itm.rs): sim = logits^T detached (image x text); per image one
       negative text ~ softmax over the row without the diagonal, per text one negative image
       ~ softmax over the column without the diagonal (torch.multinomial here; ours uses a
       SplitMix64 stream); 3B pairs (i, i), (i, neg_text[i]), (neg_image[j], j), fused, the
       Classifier(2) on the first token, CE against labels [1]*B + [0]*2B.
  MLM: one fused pass of (px, masked ids), MlmHead on fused[:, :16], CE ignore -100
       (mean over the masked tokens).
vqa: one fused pass, Classifier(K) on the first token,
     binary_cross_entropy_with_logits(logits, targets, reduction="mean") * K.

Step: zero_grad(set_to_none=True); loss.backward(); clip_grad_norm_(params, 1.0);
AdamW(lr 1e-3, betas (0.9, 0.98), eps 1e-8) step, weight decay 0.01 on the parameters that
optim.rs's Group::standard decays (>= 2-D, name not ending in "bias", not containing "norm":
so cls_token and image_pos [1, *, D] decay, logit_scale (0-D) does not), 0 on the rest.
Only the step's heads are built (pretrain: itc, itm, mlm; vqa: vqa).  In the vqa step the
vision and text experts of the VL layers get no gradient and AdamW leaves them alone.
--optim default is torch's choice (the per-parameter for-loop on CPU), fused is
AdamW(fused=True).  Note: optim.rs's AdamWConfig default beta2 is 0.999; this benchmark uses
0.98 (VLMo), so the Rust side must set it.

Timing: --warmup steps untimed, then --steps timed with time.perf_counter around the loop;
ms_per_step = elapsed / steps, samples_per_s = batch * steps / elapsed (a pretrain sample is
one image-text pair of the batch, not counting the 3B ITM pairs).  loss_first is the loss of
the very first (warm-up) step, loss_last that of the last timed step.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# MultiwayConfig::preset("small", Sharing::AllSpecific)
D, LAYERS, HEADS, FFN, EPS = 64, 4, 4, 256, 1e-6
IMAGE, PATCH, CHANNELS = 32, 8, 3
VOCAB, TEXT_LEN, TYPES, VL_LAYERS = 1000, 16, 3, 2
N_PATCHES = (IMAGE // PATCH) ** 2
ITC_DIM = 64
PAD, CLS, SEP, MASK, FIRST_WORD = 0, 2, 3, 4, 5
LR, BETAS, ADAM_EPS, WD, CLIP = 1e-3, (0.9, 0.98), 1e-8, 0.01, 1.0


# --- tch's default initialisations -------------------------------------------------------

def kaiming_uniform_(w, fan_in):
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        w.uniform_(-bound, bound)


def linear(i, o):
    m = nn.Linear(i, o)
    kaiming_uniform_(m.weight, i)
    b = 1.0 / math.sqrt(i)
    with torch.no_grad():
        m.bias.uniform_(-b, b)
    return m


def embedding(n, d):
    m = nn.Embedding(n, d)
    with torch.no_grad():
        m.weight.normal_(0.0, 1.0)
    return m


def layer_norm(d):
    return nn.LayerNorm(d, eps=EPS)


# --- the encoder (crates/models/src/multiway.rs) -------------------------------------------

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = linear(D, D), linear(D, D), linear(D, D), linear(D, D)

    def forward(self, x, mask):
        b, t, d = x.shape
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight], 0)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias], 0)
        qkv = F.linear(x, w, bias).view(b, t, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        return self.out(y.transpose(1, 2).contiguous().view(b, t, d))


class Ffn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = linear(D, FFN), linear(FFN, D)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, experts):
        super().__init__()
        self.attn = nn.ModuleDict({e: Attention() for e in experts})
        self.ffn = nn.ModuleDict({e: Ffn() for e in experts})
        self.norm1 = nn.ModuleDict({e: layer_norm(D) for e in experts})
        self.norm2 = nn.ModuleDict({e: layer_norm(D) for e in experts})

    def forward(self, x, mask, e):  # pre-LN, all parts specific: every part is expert e's
        h = x + self.attn[e](self.norm1[e](x), mask)
        return h + self.ffn[e](self.norm2[e](h))


class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(CHANNELS, D, PATCH, stride=PATCH)
        kaiming_uniform_(self.patch.weight, CHANNELS * PATCH * PATCH)
        nn.init.zeros_(self.patch.bias)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.image_pos = nn.Parameter(torch.randn(1, N_PATCHES + 1, D) * 0.02)
        self.word = embedding(VOCAB, D)
        self.text_pos = embedding(TEXT_LEN, D)
        self.text_norm = layer_norm(D)
        self.token_type = embedding(TYPES, D)


def key_mask(mask):
    """multiway.rs key_mask: bool [B, 1, 1, T], or None when nothing is padded."""
    keep = mask.ne(0)
    if bool(keep.all()):
        return None
    return keep.view(mask.shape[0], 1, 1, mask.shape[1])


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(["vision", "text", "vl"] if i >= LAYERS - VL_LAYERS else ["vision", "text"])
            for i in range(LAYERS))
        self.norm = layer_norm(D)


class Multiway(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder()

    def embed_image(self, px, type_id):
        e = self.embeddings
        x = e.patch(px).flatten(2, 3).transpose(1, 2)
        x = torch.cat([e.cls_token.expand(px.shape[0], 1, D), x], 1) + e.image_pos
        return x + e.token_type(torch.tensor(type_id))

    def embed_text(self, ids):
        e = self.embeddings
        x = e.word(ids) + e.text_pos(torch.arange(ids.shape[1]))
        x = x + e.token_type(torch.zeros_like(ids))
        return e.text_norm(x)

    def run(self, x, mask, layers, e):
        for l in self.encoder.layers[layers]:
            x = l(x, mask, e)
        return x

    def encode_image(self, px):
        return self.encoder.norm(self.run(self.embed_image(px, 1), None, slice(0, LAYERS), "vision"))

    def encode_text(self, ids, mask):
        x = self.embed_text(ids)
        return self.encoder.norm(self.run(x, key_mask(mask), slice(0, LAYERS), "text"))

    def encode_image_text(self, px, ids, mask, type_id=1):
        split = LAYERS - VL_LAYERS
        t = self.run(self.embed_text(ids), key_mask(mask), slice(0, split), "text")
        i = self.run(self.embed_image(px, type_id), None, slice(0, split), "vision")
        m = torch.cat([mask.long(), torch.ones(px.shape[0], i.shape[1], dtype=torch.long)], 1)
        x = self.run(torch.cat([t, i], 1), key_mask(m), slice(split, LAYERS), "vl")
        return self.encoder.norm(x)


# --- heads (crates/models/src/heads.rs) ---------------------------------------------------

class ItcHead(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.text_proj, self.image_proj = linear(D, dim), linear(D, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    def logits(self, text_cls, image_cls):
        norm = lambda x: x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-12)
        scale = self.logit_scale.clamp_max(math.log(100.0)).exp()
        return norm(self.text_proj(text_cls)) @ norm(self.image_proj(image_cls)).T * scale

    def loss(self, logits):
        target = torch.arange(logits.shape[0])
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class Classifier(nn.Module):
    def __init__(self, inp, classes):
        super().__init__()
        self.dense, self.norm, self.out = linear(inp, 2 * inp), layer_norm(2 * inp), linear(2 * inp, classes)

    def forward(self, x):
        return self.out(self.norm(F.gelu(self.dense(x))))


class MlmHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense, self.norm, self.decoder = linear(D, D), layer_norm(D), linear(D, VOCAB)

    def forward(self, h):
        return self.decoder(self.norm(F.gelu(self.dense(h))))


def encoder_parameter_count():
    """multiway.rs parameter_count for small / AllSpecific."""
    attn, ffn, ln = 4 * (D * D + D), D * FFN + FFN + FFN * D + D, 2 * D
    blocks = sum((3 if i >= LAYERS - VL_LAYERS else 2) * (attn + ffn + 2 * ln) for i in range(LAYERS))
    image = CHANNELS * PATCH * PATCH * D + D + D + (N_PATCHES + 1) * D
    text = (VOCAB + TEXT_LEN) * D + 2 * D
    return blocks + image + text + TYPES * D + 2 * D


def decays(name, p):
    """optim.rs decays(): >= 2-D, not ending in `bias`, not containing `norm`."""
    return p.dim() >= 2 and not name.lower().endswith("bias") and "norm" not in name.lower()


# --- data ---------------------------------------------------------------------------------

def make_data(batch, answers):
    g = torch.Generator().manual_seed(1)
    px = torch.randn(batch, CHANNELS, IMAGE, IMAGE, generator=g)
    ids = torch.randint(FIRST_WORD, VOCAB, (batch, TEXT_LEN), generator=g)
    lengths = torch.randint(8, TEXT_LEN + 1, (batch,), generator=g)
    pos = torch.arange(TEXT_LEN).unsqueeze(0)
    mask = (pos < lengths.unsqueeze(1)).long()
    ids[:, 0] = CLS
    ids = torch.where(pos == (lengths - 1).unsqueeze(1), torch.full_like(ids, SEP), ids)
    ids = ids * mask  # [PAD] = 0
    word = (ids >= FIRST_WORD)
    pick = (torch.rand(batch, TEXT_LEN, generator=g) < 0.15) & word
    for r in range(batch):
        if not pick[r].any():
            w = word[r].nonzero().flatten()
            pick[r, w[torch.randint(len(w), (1,), generator=g)]] = True
    masked = torch.where(pick, torch.full_like(ids, MASK), ids)
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    targets = torch.zeros(batch, answers)
    ans = torch.randint(answers, (batch,), generator=g)
    scores = torch.tensor([0.3, 0.6, 0.9, 1.0])[torch.randint(4, (batch,), generator=g)]
    targets[torch.arange(batch), ans] = scores
    return dict(px=px, ids=ids, mask=mask, masked=masked, labels=labels, targets=targets)


# --- the steps ----------------------------------------------------------------------------

def pretrain_loss(model, heads, d):
    itc, itm, mlm = heads["itc"], heads["itm"], heads["mlm"]
    b = d["px"].shape[0]
    image_cls = model.encode_image(d["px"])[:, 0]
    text_cls = model.encode_text(d["ids"], d["mask"])[:, 0]
    logits = itc.logits(text_cls, image_cls)  # [text, image]
    loss_itc = itc.loss(logits)
    # ITM hard negatives (itm.rs): sim[i, j] = image i, text j; the diagonal excluded.
    with torch.no_grad():
        sim = logits.T.detach()
        diag = torch.eye(b, dtype=torch.bool)
        w_i2t = torch.softmax(sim.masked_fill(diag, float("-inf")), dim=1)
        w_t2i = torch.softmax(sim.T.masked_fill(diag, float("-inf")), dim=1)
        text_for_image = torch.multinomial(w_i2t, 1).flatten()
        image_for_text = torch.multinomial(w_t2i, 1).flatten()
    ar = torch.arange(b)
    images = torch.cat([ar, ar, image_for_text])
    texts = torch.cat([ar, text_for_image, ar])
    h = model.encode_image_text(d["px"][images], d["ids"][texts], d["mask"][texts], 1)
    itm_labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)])
    loss_itm = F.cross_entropy(itm(h[:, 0]), itm_labels)
    # MLM on the fused encoding's text positions.
    fused = model.encode_image_text(d["px"], d["masked"], d["mask"], 1)
    mlm_logits = mlm(fused[:, :TEXT_LEN])
    loss_mlm = F.cross_entropy(mlm_logits.reshape(-1, VOCAB), d["labels"].reshape(-1), ignore_index=-100)
    return loss_itc + loss_itm + loss_mlm


def vqa_loss(model, heads, d):
    h = model.encode_image_text(d["px"], d["ids"], d["mask"], 1)
    logits = heads["vqa"](h[:, 0])
    k = logits.shape[1]
    return F.binary_cross_entropy_with_logits(logits, d["targets"], reduction="mean") * k


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("threads", type=int)
    ap.add_argument("--step", required=True, choices=["pretrain", "vqa"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--optim", default="default", choices=["default", "fused"],
                    help="AdamW implementation (default: torch's choice = for-loop on CPU)")
    ap.add_argument("--answers", type=int, default=40)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.batch < 2:
        ap.error("need --steps >= 1, --warmup >= 0, --batch >= 2 (ITM needs a negative)")
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)

    model = Multiway()
    if args.step == "pretrain":
        heads = nn.ModuleDict({"itc": ItcHead(ITC_DIM), "itm": Classifier(D, 2), "mlm": MlmHead()})
        loss_fn = pretrain_loss
    else:
        heads = nn.ModuleDict({"vqa": Classifier(D, args.answers)})
        loss_fn = vqa_loss
    model.train()
    heads.train()
    n_enc = sum(p.numel() for p in model.parameters())
    n_heads = sum(p.numel() for p in heads.parameters())
    assert n_enc == encoder_parameter_count(), (n_enc, encoder_parameter_count())
    print(f"parameters: encoder {n_enc} (parameter_count {encoder_parameter_count()}), "
          f"heads {n_heads} ({', '.join(f'{k} {sum(p.numel() for p in h.parameters())}' for k, h in heads.items())}), "
          f"total {n_enc + n_heads}", file=sys.stderr, flush=True)

    named = [(n, p) for n, p in model.named_parameters()] + [("heads." + n, p) for n, p in heads.named_parameters()]
    params = [p for _, p in named]
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": WD},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    kw = dict(lr=LR, betas=BETAS, eps=ADAM_EPS)
    if args.optim == "fused":
        try:
            opt = torch.optim.AdamW(groups, fused=True, **kw)
        except Exception as e:  # noqa: BLE001
            print(f"train_step_torch: AdamW(fused=True) failed: {e}", file=sys.stderr)
            sys.exit(2)
    else:
        opt = torch.optim.AdamW(groups, **kw)

    data = make_data(args.batch, args.answers)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, heads, data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()

    loss_first = None
    for _ in range(args.warmup):
        loss = step()
        if loss_first is None:
            loss_first = loss
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        loss_last = step()
        if loss_first is None:
            loss_first = loss_last
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "impl": "torch", "step": args.step, "optim": "adamw_fused" if args.optim == "fused" else "adamw",
        "threads": args.threads, "batch": args.batch, "steps": args.steps,
        "samples_per_s": round(args.batch * args.steps / el, 3), "ms_per_step": round(el / args.steps * 1000, 2),
        "params": n_enc + n_heads, "loss_first": round(loss_first, 4), "loss_last": round(loss_last, 4),
        "params_encoder": n_enc, "params_heads": n_heads,
        "cpu_ms_per_step": round(cpu / args.steps * 1000, 2), "torch": torch.__version__,
    }
    if args.step == "vqa":
        out["answers"] = args.answers
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
