#!/usr/bin/env python3
"""Generate a deterministic LLaMA-shaped bf16 checkpoint for scripts/bench-merge.

    make_llama.py OUT_DIR --layers 8 [--variant base|ft1|ft2|...] [--shards 2]

The base model has N(0, 0.02) weights (norm weights = 1).  A "fine-tuned"
variant ftK is the base plus N(0, 0.002) noise (norms: + N(0, 0.01)), drawn
from its own generator, so ftK = base + a small task vector.  Every tensor is
drawn from a torch.Generator seeded from (variant, tensor name), so the files
are bit-identical on every run and the base tensors are re-derived (not kept
in memory) when a variant is written.

Shape: hidden 2048, intermediate 5632, 32 heads (32 KV heads), vocab 32000,
untied lm_head; 8 layers = 542 M parameters = 1.08 GB in bf16.  With
--shards 2 the tensors are split into two files of about equal size plus
model.safetensors.index.json (as Hugging Face writes them); with --shards 1 a
single model.safetensors is written.  Writes config.json (LlamaForCausalLM)
so that mergekit recognises the architecture.  Needs torch and safetensors.
"""

import argparse
import hashlib
import json
import os
import sys

import torch
from safetensors.torch import save_file

HIDDEN = 2048
INTER = 5632
HEADS = 32
VOCAB = 32000


def tensor_shapes(layers):
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
        ]
    shapes += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return shapes


def gen(seed_text):
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little") & (2**63 - 1)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_tensor(name, shape, variant):
    is_norm = len(shape) == 1
    if is_norm:
        t = torch.ones(shape, dtype=torch.float32)
    else:
        t = torch.randn(shape, generator=gen("base/" + name), dtype=torch.float32)
        t.mul_(0.02)
    if variant != "base":
        noise = torch.randn(shape, generator=gen(variant + "/" + name), dtype=torch.float32)
        t.add_(noise, alpha=0.01 if is_norm else 0.002)
    return t.to(torch.bfloat16)


def config_json(layers):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--variant", default="base", help="base, or ft1/ft2/... (base + noise)")
    ap.add_argument("--shards", type=int, default=1, choices=[1, 2])
    a = ap.parse_args()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(a.out_dir, exist_ok=True)
    shapes = tensor_shapes(a.layers)
    total = sum(2 * torch.Size(s).numel() for _, s in shapes)

    # Split into `shards` groups of consecutive tensors of about equal bytes.
    groups, acc, cur = [], 0, []
    for name, shape in shapes:
        cur.append((name, shape))
        acc += 2 * torch.Size(shape).numel()
        if a.shards == 2 and not groups and acc >= total / 2:
            groups.append(cur)
            cur = []
    groups.append(cur)

    meta = {"format": "pt"}
    weight_map = {}
    for k, group in enumerate(groups):
        fname = "model.safetensors" if a.shards == 1 else f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: make_tensor(name, shape, a.variant) for name, shape in group}
        save_file(tensors, os.path.join(a.out_dir, fname), metadata=meta)
        for name in tensors:
            weight_map[name] = fname
        del tensors
    if a.shards > 1:
        with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config_json(a.layers), f, indent=2)
    print(f"{a.out_dir}: {a.variant}, {a.layers} layers, {total / 1e9:.3f} GB in {len(groups)} file(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
