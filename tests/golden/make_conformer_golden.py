#!/usr/bin/python3
"""Golden values for our Conformer blocks from torchaudio.models.Conformer (torchaudio 0.13.1, Debian's
python3-torchaudio, on the same LibTorch build that the workbench links).

For each case it builds a torchaudio Conformer from a seed, saves its weights under the names of our
blocks (plugins/encoder/conformer/conformer_block.h), an input batch, and torchaudio's output, as .npy
files in tests/data/conformer_golden/<case>/. tests/test_conformer.cpp loads the weights into our encoder,
runs encode() on the input and must match the output within 1e-4.

Cases (position = none; evaluation mode, so dropout is off and batch norm uses its running statistics):
  batch: conv_norm = batch, running statistics set to random values;
  group: conv_norm = group with one group, torchaudio's use_group_norm.
Every row has its full length: torchaudio's conv module lets padded frames into the depthwise kernel and
its norms, and ours does not (our intended difference), so padding is left out of the comparison.

  /usr/bin/python3 tests/golden/make_conformer_golden.py
"""
import os

import numpy as np
import torch
import torchaudio

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "conformer_golden")
D, HEADS, FFN, LAYERS, KERNEL, B, T = 16, 2, 32, 2, 7, 2, 20


def ours(layer, i, group):
    """(our name, tensor) pairs of torchaudio ConformerLayer `layer` as our block i."""
    p = f"blocks.{i}."
    out = []

    def ffn(mod, name):
        s = mod.sequential
        out.extend([(p + name + ".norm.weight", s[0].weight), (p + name + ".norm.bias", s[0].bias),
                    (p + name + ".up.weight", s[1].weight), (p + name + ".up.bias", s[1].bias),
                    (p + name + ".down.weight", s[4].weight), (p + name + ".down.bias", s[4].bias)])

    ffn(layer.ffn1, "ffn1")
    a = layer.self_attn
    out.extend([(p + "attention.norm.weight", layer.self_attn_layer_norm.weight),
                (p + "attention.norm.bias", layer.self_attn_layer_norm.bias),
                (p + "attention.qkv.weight", a.in_proj_weight), (p + "attention.qkv.bias", a.in_proj_bias),
                (p + "attention.out.weight", a.out_proj.weight), (p + "attention.out.bias", a.out_proj.bias)])
    c = layer.conv_module
    s = c.sequential
    out.extend([(p + "conv.norm.weight", c.layer_norm.weight), (p + "conv.norm.bias", c.layer_norm.bias),
                (p + "conv.pointwise_in.weight", s[0].weight.squeeze(-1)), (p + "conv.pointwise_in.bias", s[0].bias),
                (p + "conv.depthwise.weight", s[2].weight), (p + "conv.depthwise.bias", s[2].bias),
                (p + "conv.pointwise_out.weight", s[5].weight.squeeze(-1)), (p + "conv.pointwise_out.bias", s[5].bias)])
    norm = s[3]
    if group:
        out.extend([(p + "conv.group_norm.weight", norm.weight), (p + "conv.group_norm.bias", norm.bias)])
    else:
        out.extend([(p + "conv.batch_norm.weight", norm.weight), (p + "conv.batch_norm.bias", norm.bias),
                    (p + "conv.batch_norm.running_mean", norm.running_mean),
                    (p + "conv.batch_norm.running_var", norm.running_var)])
    ffn(layer.ffn2, "ffn2")
    out.extend([(p + "final_norm.weight", layer.final_layer_norm.weight),
                (p + "final_norm.bias", layer.final_layer_norm.bias)])
    return out


def make(case, group, seed):
    torch.manual_seed(seed)
    model = torchaudio.models.Conformer(input_dim=D, num_heads=HEADS, ffn_dim=FFN, num_layers=LAYERS,
                                        depthwise_conv_kernel_size=KERNEL, dropout=0.1, use_group_norm=group)
    with torch.no_grad():
        # Every parameter away from its initialisation (LayerNorm ones and zeros would hide a swapped
        # weight and bias), and batch norm's running statistics away from 0 and 1.
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.2)
        for layer in model.conformer_layers:
            norm = layer.conv_module.sequential[3]
            if not group:
                norm.running_mean.copy_(torch.randn_like(norm.running_mean) * 0.3)
                norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.5)
    model.eval()
    x = torch.randn(B, T, D)
    lengths = torch.full((B,), T, dtype=torch.int64)
    with torch.no_grad():
        y, _ = model(x, lengths)
    folder = os.path.join(OUT, case)
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, layer in enumerate(model.conformer_layers):
        for name, t in ours(layer, i, group):
            np.save(os.path.join(folder, name + ".npy"), t.detach().float().contiguous().numpy())
            names.append(name)
    np.save(os.path.join(folder, "input.npy"), x.numpy())
    np.save(os.path.join(folder, "output.npy"), y.numpy())
    with open(os.path.join(folder, "weights.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(case, "torchaudio", torchaudio.__version__, "output", tuple(y.shape), "weights", len(names))


if __name__ == "__main__":
    make("batch", group=False, seed=1)
    make("group", group=True, seed=2)
