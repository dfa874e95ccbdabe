#!/usr/bin/python3
"""Pretrains the bundled base model models/flora-tiny (a small Llama) with plain PyTorch.

    /usr/bin/python3 scripts/pretrain.py [--data .flora/pretrain] [--out models/flora-tiny]
        [--steps 1200] [--batch 16] [--seq 128] [--lr 2e-3] [--dry-run 20]

Reads the token streams written by scripts/export-pretrain-tokens.ts (train.u16, val.u16,
meta.json), trains a Llama that follows the HF LlamaForCausalLM conventions exactly
(weight names and [out, in] layouts, rotate_half RoPE with theta 10000, GQA, SwiGLU,
RMSNorm eps 1e-5 in fp32, tied lm_head), and writes model.safetensors (F16, written by
hand), config.json, generation_config.json, plus test/fixtures/flora-tiny-logits.json:
float64 logits of a fixed prompt computed from the F16-rounded weights that were saved,
for the TypeScript model's cross-check.

Deterministic: torch.manual_seed, chunk offsets from a seeded torch.Generator, one process,
fixed thread count. (Bitwise reproducibility across BLAS builds/CPUs is not guaranteed.)
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--data', default='.flora/pretrain')
p.add_argument('--out', default='models/flora-tiny')
p.add_argument('--fixture', default='test/fixtures/flora-tiny-logits.json')
p.add_argument('--steps', type=int, default=600)
p.add_argument('--batch', type=int, default=16)
p.add_argument('--seq', type=int, default=128)
p.add_argument('--lr', type=float, default=3e-3)
p.add_argument('--min-lr-ratio', type=float, default=0.1)
p.add_argument('--warmup', type=int, default=30)
p.add_argument('--weight-decay', type=float, default=0.1)
p.add_argument('--seed', type=int, default=1234)
# torch intra-op threads. 2 made the committed models/flora-tiny (keep it to reproduce those
# bits). 1 is faster on Debian's torch + libopenblas0-pthread, where OpenBLAS runs its own
# threads and a second torch pool fights it (1.37 vs 0.76 steps/s on 2 cores), but rounds
# differently.
p.add_argument('--threads', type=int, default=2)
p.add_argument('--eval-every', type=int, default=150)
p.add_argument('--max-seconds', type=float, default=0, help='safety stop: save early if training runs past this (0 = off)')
p.add_argument('--dry-run', type=int, default=0, help='time this many steps, write nothing')
p.add_argument('--hidden', type=int, default=192)
p.add_argument('--layers', type=int, default=4)
p.add_argument('--heads', type=int, default=3)
p.add_argument('--kv-heads', type=int, default=1)
p.add_argument('--intermediate', type=int, default=512)
p.add_argument('--max-pos', type=int, default=256)
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

meta = json.load(open(os.path.join(args.data, 'meta.json')))
VOCAB = meta['vocabSize']
train = torch.from_numpy(np.fromfile(os.path.join(args.data, 'train.u16'), dtype='<u2').astype(np.int64))
val = torch.from_numpy(np.fromfile(os.path.join(args.data, 'val.u16'), dtype='<u2').astype(np.int64))
print(f'train tokens {train.numel()}, val tokens {val.numel()}, vocab {VOCAB}', flush=True)

CFG = dict(
    hidden_size=args.hidden,
    intermediate_size=args.intermediate,
    num_hidden_layers=args.layers,
    num_attention_heads=args.heads,
    num_key_value_heads=args.kv_heads,
    max_position_embeddings=args.max_pos,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    vocab_size=VOCAB,
)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_tables(T, hd, theta, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float32) / hd))
    t = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv = c['num_attention_heads'], c['num_key_value_heads']
        self.hd = c['hidden_size'] // self.nh
        H = c['hidden_size']
        self.q_proj = nn.Linear(H, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(H, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, H, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)  # == HF repeat_kv: head h uses kv head h // rep
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        att = F.softmax(att.float(), dim=-1).to(q.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, I = c['hidden_size'], c['intermediate_size']
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])
        self.post_attention_layernorm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c['vocab_size'], c['hidden_size'])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c['num_hidden_layers'])])
        self.norm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, ids):
        B, T = ids.shape
        x = self.model.embed_tokens(ids)
        hd = self.c['hidden_size'] // self.c['num_attention_heads']
        cos, sin = rope_tables(T, hd, self.c['rope_theta'], x.dtype)
        mask = torch.full((T, T), float('-inf'), dtype=x.dtype).triu(1)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.t()  # tied lm_head


def batch_at(data, starts, T):
    idx = starts[:, None] + torch.arange(T + 1)[None, :]
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def val_loss(model, max_chunks=None, bs=32):
    T = args.seq
    n = (val.numel() - 1) // T
    if max_chunks is not None:
        n = min(n, max_chunks)
    starts = torch.arange(n) * T
    tot, cnt = 0.0, 0
    for i in range(0, n, bs):
        x, y = batch_at(val, starts[i:i + bs], T)
        logits = model(x)
        tot += F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction='sum').item()
        cnt += y.numel()
    return tot / cnt


model = Llama(CFG)
nparams = sum(p.numel() for p in model.parameters())
print(f'params {nparams} ({nparams / 1e6:.2f}M), config {CFG}', flush=True)

decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{'params': decay, 'weight_decay': args.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
    lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
)

steps = args.dry_run if args.dry_run > 0 else args.steps


def lr_at(s):
    if s < args.warmup:
        return args.lr * (s + 1) / args.warmup
    pr = (s - args.warmup) / max(1, steps - args.warmup)
    m = args.min_lr_ratio
    return args.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * min(1.0, pr))))


gen = torch.Generator().manual_seed(args.seed)
T = args.seq
tokens_per_step = args.batch * T
log = []
t0 = time.time()
tl = t0
ema = None
print(f'initial val loss (64 chunks) {val_loss(model, 64):.4f}  ln(V)={math.log(VOCAB):.4f}', flush=True)
for step in range(steps):
    for g in opt.param_groups:
        g['lr'] = lr_at(step)
    starts = torch.randint(0, train.numel() - T - 1, (args.batch,), generator=gen)
    x, y = batch_at(train, starts, T)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    li = loss.item()
    ema = li if ema is None else 0.98 * ema + 0.02 * li
    if step % 10 == 0 or step == steps - 1:
        now = time.time()
        el = now - t0
        print(f'step {step + 1}/{steps} loss {li:.4f} ema {ema:.4f} lr {lr_at(step):.2e} gnorm {gn:.2f} '
              f'{tokens_per_step * (step + 1) / el:.0f} tok/s {(step + 1) / el:.3f} step/s elapsed {el:.0f}s', flush=True)
    if args.max_seconds > 0 and time.time() - t0 > args.max_seconds and step + 1 < steps:
        print(f'max-seconds reached: stopping after {step + 1} of {steps} steps', flush=True)
        steps = step + 1
        break
    if args.dry_run == 0 and ((step + 1) % args.eval_every == 0 and step + 1 < steps):
        vl = val_loss(model, 128)
        log.append({'step': step + 1, 'train_loss_ema': ema, 'val_loss': vl})
        print(f'  val loss (128 chunks) {vl:.4f}', flush=True)

elapsed = time.time() - t0
if args.dry_run > 0:
    print(f'dry run: {steps} steps in {elapsed:.1f}s = {steps / elapsed:.3f} step/s')
    sys.exit(0)

# ---- save: F16 safetensors, written by hand ----
model.eval()
state = {k: v.detach() for k, v in model.state_dict().items()}  # lm_head is tied: not stored
os.makedirs(args.out, exist_ok=True)
header, blobs, off = {}, [], 0
for name in sorted(state):
    a = state[name].to(torch.float16).contiguous().numpy().astype('<f2')
    b = a.tobytes()
    header[name] = {'dtype': 'F16', 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
header['__metadata__'] = {'format': 'pt'}
hj = json.dumps(header, sort_keys=True, separators=(',', ':')).encode('utf-8')
hj += b' ' * ((8 - len(hj) % 8) % 8)
with open(os.path.join(args.out, 'model.safetensors'), 'wb') as f:
    f.write(struct.pack('<Q', len(hj)))
    f.write(hj)
    for b in blobs:
        f.write(b)

config = {
    'architectures': ['LlamaForCausalLM'],
    'model_type': 'llama',
    **CFG,
    'hidden_act': 'silu',
    'attention_bias': False,
    'mlp_bias': False,
    'head_dim': CFG['hidden_size'] // CFG['num_attention_heads'],
    'initializer_range': 0.02,
    'tie_word_embeddings': True,
    'bos_token_id': 1,
    'eos_token_id': 2,
    'pad_token_id': 3,
    'torch_dtype': 'float16',
    'use_cache': True,
}
with open(os.path.join(args.out, 'config.json'), 'w') as f:
    json.dump(config, f, indent=2, sort_keys=True)
    f.write('\n')
with open(os.path.join(args.out, 'generation_config.json'), 'w') as f:
    json.dump({'bos_token_id': 1, 'eos_token_id': 2, 'pad_token_id': 3, 'do_sample': False, 'max_new_tokens': 64}, f, indent=2)
    f.write('\n')

# ---- final numbers with the F16-rounded weights that were saved ----
with torch.no_grad():
    for k, v in model.state_dict().items():
        v.copy_(v.to(torch.float16).to(torch.float32))
final_val = val_loss(model)
print(f'final val loss (full val stream, F16 weights) {final_val:.4f}', flush=True)

# Reference logits in float64 from the same rounded weights.
ids = meta['fixturePromptIds']
m64 = model.double()
with torch.no_grad():
    lg = m64(torch.tensor([ids]))[0]  # [T, V]
last = lg[-1]
top = torch.topk(last, 10)
fixture = {
    'description': 'float64 torch logits of models/flora-tiny (F16 weights cast up) for a fixed prompt; written by scripts/pretrain.py',
    'prompt': meta['fixturePrompt'],
    'inputIds': ids,
    'lastTop10': {'ids': top.indices.tolist(), 'logits': top.values.tolist()},
    'sliceVocab': [0, 16],
    'logitsSlice': lg[:, 0:16].tolist(),
    'logsumexp': torch.logsumexp(lg, dim=-1).tolist(),
    'modelSha256': __import__('hashlib').sha256(open(os.path.join(args.out, 'model.safetensors'), 'rb').read()).hexdigest(),
}
os.makedirs(os.path.dirname(args.fixture), exist_ok=True)
with open(args.fixture, 'w') as f:
    json.dump(fixture, f, indent=1)
    f.write('\n')

summary = {
    'params': nparams, 'steps': steps, 'batch': args.batch, 'seq': T, 'tokens_seen': steps * tokens_per_step,
    'lr': args.lr, 'warmup': args.warmup, 'seconds': round(elapsed, 1), 'final_train_loss_ema': ema,
    'final_val_loss_f16': final_val, 'val_log': log, 'data': meta,
}
with open(os.path.join(args.data, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
print(json.dumps({k: v for k, v in summary.items() if k not in ('data',)}), flush=True)
