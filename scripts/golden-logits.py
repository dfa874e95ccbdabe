#!/usr/bin/env python3
"""
Golden logits for the architectures flora loads (Llama 3.x RoPE scaling, Qwen2, Mistral
with a sliding window, SmolLM2, Llama with attention biases): for each, a small random
checkpoint in Hugging Face layout (config.json + model.safetensors, F16 weights) and the
logits of a float64 forward pass written here, independently of flora's TypeScript, from
the formulas of Hugging Face transformers' modeling_llama / modeling_qwen2 /
modeling_mistral and its rope-initialisation functions (_compute_default_rope_parameters,
_compute_linear_scaling_rope_parameters, _compute_llama3_parameters).

    python3 scripts/golden-logits.py            # rewrites test/fixtures/arch/*
    python3 scripts/golden-logits.py --check    # recomputes and compares, writes nothing

Needs only numpy. Seeded: the same files every run.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'arch')

BASE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
            hidden_act='silu', tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)

MODELS = {
    # Llama 3.2: llama3 RoPE scaling, tied embeddings, GQA. original_max_position_embeddings 64 with
    # low/high frequency factors 1/4 puts this head dim's frequencies in all three bands.
    'llama3.2': dict(BASE, model_type='llama', architectures=['LlamaForCausalLM'], tie_word_embeddings=True,
                     rope_theta=500000.0,
                     rope_scaling=dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=64)),
    # Linear position interpolation (older long-context Llama fine-tunes), in the old "type" key.
    'llama-linear': dict(BASE, model_type='llama', architectures=['LlamaForCausalLM'],
                         rope_scaling=dict(type='linear', factor=4.0)),
    # Llama with attention_bias: q/k/v and o_proj have biases.
    'llama-bias': dict(BASE, model_type='llama', architectures=['LlamaForCausalLM'], attention_bias=True),
    # Qwen2 / Qwen2.5: q/k/v biases (o_proj none), tied embeddings, theta 1e6, sliding window configured but off.
    'qwen2': dict(BASE, model_type='qwen2', architectures=['Qwen2ForCausalLM'], tie_word_embeddings=True,
                  rope_theta=1000000.0, use_sliding_window=False, sliding_window=4096, max_window_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    # Mistral with a sliding window shorter than the test sequence.
    'mistral': dict(BASE, model_type='mistral', architectures=['MistralForCausalLM'], sliding_window=5,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    # SmolLM2: a plain Llama with tied embeddings, GQA 3:1 and theta 1e5.
    'smollm2': dict(BASE, model_type='llama', architectures=['LlamaForCausalLM'], tie_word_embeddings=True,
                    hidden_size=48, num_attention_heads=3, num_key_value_heads=1, head_dim=16, rope_theta=100000.0),
}

SEQ = 12
BATCH = 2


def weight_shapes(c):
    d, hd, nh, nkv, f = c['hidden_size'], c['head_dim'], c['num_attention_heads'], c['num_key_value_heads'], c['intermediate_size']
    qkv_bias = c['model_type'] == 'qwen2' or c.get('attention_bias', False)
    o_bias = c['model_type'] != 'qwen2' and c.get('attention_bias', False)
    shapes = {'model.embed_tokens.weight': (c['vocab_size'], d)}
    for i in range(c['num_hidden_layers']):
        p = f'model.layers.{i}.'
        shapes[p + 'input_layernorm.weight'] = (d,)
        shapes[p + 'post_attention_layernorm.weight'] = (d,)
        shapes[p + 'self_attn.q_proj.weight'] = (nh * hd, d)
        shapes[p + 'self_attn.k_proj.weight'] = (nkv * hd, d)
        shapes[p + 'self_attn.v_proj.weight'] = (nkv * hd, d)
        shapes[p + 'self_attn.o_proj.weight'] = (d, nh * hd)
        if qkv_bias:
            shapes[p + 'self_attn.q_proj.bias'] = (nh * hd,)
            shapes[p + 'self_attn.k_proj.bias'] = (nkv * hd,)
            shapes[p + 'self_attn.v_proj.bias'] = (nkv * hd,)
        if o_bias:
            shapes[p + 'self_attn.o_proj.bias'] = (d,)
        shapes[p + 'mlp.gate_proj.weight'] = (f, d)
        shapes[p + 'mlp.up_proj.weight'] = (f, d)
        shapes[p + 'mlp.down_proj.weight'] = (d, f)
    shapes['model.norm.weight'] = (d,)
    if not c['tie_word_embeddings']:
        shapes['lm_head.weight'] = (c['vocab_size'], d)
    return shapes


def random_weights(c, seed):
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in weight_shapes(c).items():
        if name.endswith('norm.weight'):
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith('.bias'):
            x = 0.1 * rng.standard_normal(shape)
        else:
            x = 0.15 * rng.standard_normal(shape)
        # Stored as F16: the reference computes with exactly the stored values.
        w[name] = x.astype(np.float16)
    return w


def inv_freq(c):
    """HF's rope initialisation: default, linear, llama3."""
    hd = c['head_dim']
    base = c['rope_theta']
    f = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float64) / hd))
    s = c.get('rope_scaling')
    if s is None:
        return f
    kind = s.get('rope_type', s.get('type'))
    if kind == 'linear':
        return f / s['factor']
    if kind == 'llama3':
        factor, low, high, old = s['factor'], s['low_freq_factor'], s['high_freq_factor'], s['original_max_position_embeddings']
        low_wavelen = old / low
        high_wavelen = old / high
        wavelen = 2 * math.pi / f
        scaled = np.where(wavelen > low_wavelen, f / factor, f)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled)
    raise ValueError(kind)


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(c, w, ids):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    b, t = ids.shape
    d, hd, nh, nkv = c['hidden_size'], c['head_dim'], c['num_attention_heads'], c['num_key_value_heads']
    eps = c['rms_norm_eps']
    freqs = np.outer(np.arange(t, dtype=np.float64), inv_freq(c))  # [t, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    window = None
    if c['model_type'] == 'mistral' and c.get('sliding_window') is not None:
        window = c['sliding_window']
    if c['model_type'] == 'qwen2' and c.get('use_sliding_window', False):
        raise ValueError('not generated')
    i_idx = np.arange(t)[:, None]
    j_idx = np.arange(t)[None, :]
    visible = j_idx <= i_idx
    if window is not None:
        visible &= (i_idx - j_idx) < window
    mask = np.where(visible, 0.0, -np.inf)

    def lin(x, name):
        y = x @ w[name + '.weight'].T
        if name + '.bias' in w:
            y = y + w[name + '.bias']
        return y

    h = w['model.embed_tokens.weight'][ids]  # [b, t, d]
    for layer in range(c['num_hidden_layers']):
        p = f'model.layers.{layer}.'
        x = rms_norm(h, w[p + 'input_layernorm.weight'], eps)
        q = lin(x, p + 'self_attn.q_proj').reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        k = lin(x, p + 'self_attn.k_proj').reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        v = lin(x, p + 'self_attn.v_proj').reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + mask
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        h = h + lin(o, p + 'self_attn.o_proj')
        x = rms_norm(h, w[p + 'post_attention_layernorm.weight'], eps)
        g = lin(x, p + 'mlp.gate_proj')
        u = lin(x, p + 'mlp.up_proj')
        h = h + lin(g / (1 + np.exp(-g)) * u, p + 'mlp.down_proj')
    h = rms_norm(h, w['model.norm.weight'], eps)
    head = w['model.embed_tokens.weight'] if c['tie_word_embeddings'] else w['lm_head.weight']
    return h @ head.T


def safetensors_bytes(w):
    header = {'__metadata__': {'format': 'pt'}}
    offset = 0
    chunks = []
    for name in sorted(w):
        data = w[name].astype('<f2').tobytes()
        header[name] = {'dtype': 'F16', 'shape': list(w[name].shape), 'data_offsets': [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(chunks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--check', action='store_true', help='recompute and compare with the committed files; write nothing')
    args = ap.parse_args()
    bad = 0
    for seed, (name, c) in enumerate(sorted(MODELS.items())):
        w = random_weights(c, 1000 + seed)
        ids = np.random.default_rng(2000 + seed).integers(3, c['vocab_size'], size=(BATCH, SEQ))
        logits = forward(c, w, ids)
        d = os.path.join(OUT, name)
        golden = {'input_ids': ids.tolist(), 'logits': [[[float(x) for x in row] for row in seq] for seq in logits],
                  'note': 'float64 reference forward of scripts/golden-logits.py on the F16 weights of model.safetensors'}
        if args.check:
            with open(os.path.join(d, 'golden.json')) as f:
                old = json.load(f)
            diff = float(np.max(np.abs(np.array(old['logits']) - logits)))
            print(f'{name}: max |logit - committed| = {diff:.3g}')
            bad += diff > 1e-12
            continue
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'config.json'), 'w') as f:
            json.dump(c, f, indent=2)
            f.write('\n')
        with open(os.path.join(d, 'model.safetensors'), 'wb') as f:
            f.write(safetensors_bytes(w))
        with open(os.path.join(d, 'golden.json'), 'w') as f:
            json.dump(golden, f)
            f.write('\n')
        print(f'{name}: {sum(x.size for x in w.values())} parameters, logits std {logits.std():.3f} -> {d}')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
