#!/usr/bin/env python3
"""PyTorch baseline for bench/train.ts: the same Llama + LoRA (r=16 on q_proj, v_proj)
training step, float32 on CPU, AdamW, loss on the tokens after a 16-token prompt.

    /usr/bin/python3 bench/train_torch.py [--config bundled|small|wide|all] [--steps 5] [--threads N] [--device cpu|cuda] [--json]

--device cuda runs the step on the GPU (float32, TF32 off: torch's default for matmuls) and
reports the peak GPU memory torch allocated; bench/train.ts asks for it when flora trains on a
GPU backend (webgpu). Without CUDA it exits with the reason.

`bundled` has the shapes of models/flora-tiny (GQA: 3 query heads of 64, 1 key/value head,
repeated as HF's repeat_kv does; lm_head tied to the embedding), with random weights: only
the speed is measured. `small` and `wide` are plain multi-head models with a separate lm_head.

Reports the best and median wall time and the median CPU time per step, like the TypeScript
bench (`npm run bench:train -- --torch` runs this script and compares). Without --threads,
torch keeps its default intra-op thread count; the BLAS it is linked against (OpenBLAS in the
Debian build) runs its own thread pool either way, so both are reported.
"""
import argparse
import ctypes
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# kv_heads defaults to heads (MHA), head_dim to d // heads, tied to False.
CONFIGS = {
    "bundled": dict(vocab=4096, d=192, inter=512, layers=4, heads=3, kv_heads=1, head_dim=64, tied=True),
    "small": dict(vocab=4096, d=256, inter=688, layers=4, heads=4),
    "wide": dict(vocab=4096, d=512, inter=1376, layers=8, heads=8),
    # TinyLlama-1.1B's shapes (GQA 32:4, untied); one sequence per step, as bench/train.ts runs it.
    "tinyllama-1.1b": dict(vocab=32000, d=2048, inter=5632, layers=22, heads=32, kv_heads=4, head_dim=64, batch=1),
    # SmolLM2-135M's shapes (GQA 9:3, tied), batch 8 x 128 as bench/train.ts runs it.
    "smollm2-135m": dict(vocab=49152, d=576, inter=1536, layers=30, heads=9, kv_heads=3, head_dim=64, tied=True),
}


def head_dim(c):
    return c.get("head_dim", c["d"] // c["heads"])
BATCH, SEQ, RANK, PROMPT = 8, 128, 16, 16


class LoraLinear(nn.Module):
    def __init__(self, inf, outf, rank=0, alpha=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outf, inf) * 0.02, requires_grad=False)
        self.rank = rank
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, inf).uniform_(-1 / math.sqrt(inf), 1 / math.sqrt(inf)))
            self.lora_B = nn.Parameter(torch.zeros(outf, rank))
            self.scaling = alpha / rank

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.rank:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    """[b, kvh, t, hd] -> [b, kvh * n_rep, t, hd], as transformers' LlamaAttention does."""
    if n_rep == 1:
        return x
    b, kvh, t, hd = x.shape
    return x[:, :, None, :, :].expand(b, kvh, n_rep, t, hd).reshape(b, kvh * n_rep, t, hd)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h = c["d"], c["heads"]
        kvh = c.get("kv_heads", h)
        self.h, self.kvh, self.hd = h, kvh, head_dim(c)
        self.q = LoraLinear(d, h * self.hd, RANK, 2 * RANK)
        self.k = LoraLinear(d, kvh * self.hd)
        self.v = LoraLinear(d, kvh * self.hd, RANK, 2 * RANK)
        self.o = LoraLinear(h * self.hd, d)
        self.gate = LoraLinear(d, c["inter"])
        self.up = LoraLinear(d, c["inter"])
        self.down = LoraLinear(c["inter"], d)
        self.n1 = nn.Parameter(torch.ones(d), requires_grad=False)
        self.n2 = nn.Parameter(torch.ones(d), requires_grad=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        n = rms_norm(x, self.n1)
        q = self.q(n).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(n).view(b, t, self.kvh, self.hd).transpose(1, 2)
        v = self.v(n).view(b, t, self.kvh, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.h // self.kvh)
        v = repeat_kv(v, self.h // self.kvh)
        # Explicit attention (no fused SDPA kernel: torch 1.13 has none on CPU).
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, self.h * self.hd))
        m = rms_norm(x, self.n2)
        return x + self.down(F.silu(self.gate(m)) * self.up(m))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(c["vocab"], c["d"]) * 0.02, requires_grad=False)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = nn.Parameter(torch.ones(c["d"]), requires_grad=False)
        # Tied: lm_head is the embedding matrix itself (one tensor, as HF ties them).
        self.head = self.embed if c.get("tied", False) else nn.Parameter(torch.randn(c["vocab"], c["d"]) * 0.02, requires_grad=False)
        hd = head_dim(c)
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(SEQ).float(), inv)
        emb = torch.cat((ang, ang), -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def forward(self, ids):
        x = self.embed[ids]
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        return F.linear(rms_norm(x, self.norm), self.head)


def blas_library():
    """The BLAS torch runs on: ('openblas' | 'mkl' | 'blis' | 'reference' | 'unknown', path).

    Debian's python3-torch links libblas.so.3, which is whatever the alternatives system points
    at: OpenBLAS with libopenblas0-pthread installed, else the reference BLAS of libblas3
    (10-25x slower: no baseline worth comparing against)."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if ".so" in line and ("blas" in line or "mkl" in line)})
    except OSError:
        return ("unknown", None)
    for kind, needle in (("mkl", "libmkl"), ("openblas", "openblas"), ("blis", "blis")):
        for lib in libs:
            if needle in lib:
                return (kind, lib)
    for lib in libs:
        if "libblas.so" in lib:
            return ("reference", lib)
    return ("unknown", libs[0] if libs else None)


def blas_threads():
    """Threads of the loaded OpenBLAS (it ignores torch.set_num_threads), or None if unknown."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "libopenblas" in line}
        for lib in sorted(libs):
            n = ctypes.CDLL(lib).openblas_get_num_threads
            n.restype = ctypes.c_int
            return int(n())
    except (OSError, AttributeError):
        pass
    return None


def run(name, steps, threads, device):
    torch.manual_seed(0)
    if threads is not None:
        torch.set_num_threads(threads)
    c = CONFIGS[name]
    model = Llama(c).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    batch = c.get("batch", BATCH)
    ids = torch.randint(0, c["vocab"], (batch, SEQ)).to(device)
    labels = ids.clone()
    labels[:, :PROMPT] = -100

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, c["vocab"]), labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    walls, cpus = [], []
    for _ in range(steps):
        w0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append(((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) * 1000)
    walls.sort()
    cpus.sort()
    tokens = batch * SEQ
    blas, blas_path = blas_library()
    gpu = {}
    if device == "cuda":
        gpu = dict(device="cuda", gpu=torch.cuda.get_device_name(), gpuPeakMiB=round(torch.cuda.max_memory_allocated() / 2**20))
    return dict(
        config=name,
        **gpu,
        blas=blas,
        blasLibrary=blas_path,
        threads=torch.get_num_threads(),
        blasThreads=blas_threads(),
        stepMs=round(walls[0]),
        medianStepMs=round(walls[len(walls) // 2]),
        cpuMsPerStep=round(cpus[len(cpus) // 2]),
        tokensPerSecond=round(tokens / (walls[0] / 1000)),
        medianTokensPerSecond=round(tokens / (walls[len(walls) // 2] / 1000)),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="all")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own default)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"torch {torch.__version__} has no CUDA device here (torch.cuda.is_available() is False)")
    names = list(CONFIGS) if a.config == "all" else [a.config]
    res = [run(n, a.steps, a.threads, a.device) for n in names]
    out = dict(torch=torch.__version__, results=res)
    if a.json:
        print(json.dumps(out))
    else:
        for r in res:
            print(f"torch {torch.__version__} {r['config']}: {r['stepMs']} ms/step (median {r['medianStepMs']}, cpu {r['cpuMsPerStep']}) "
                  f"{r['tokensPerSecond']} tok/s, {r['threads']} intra-op thread(s), BLAS {r['blas']} ({r['blasLibrary']}) threads {r['blasThreads'] or '?'}")
            if r["blas"] == "reference":
                print("  torch runs on the reference BLAS (libblas3): 10-25x slower than it can be; apt-get install libopenblas0-pthread")


if __name__ == "__main__":
    main()
