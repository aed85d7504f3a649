#!/usr/bin/python3
"""Peer for bench/conformer_step.cpp: the same Conformer-CTC training step with torchaudio.

torchaudio.models.Conformer (Gulati et al. 2020) behind the same Conv2D 4x subsampling, a Linear CTC
head, torch.nn.functional.ctc_loss and Adam, with the same dimensions and threads. Run by the C++
benchmark with Debian's /usr/bin/python3 (python3-torch, python3-torchaudio: the same libtorch build).
"""
import argparse
import time

import torch
import torchaudio


class Subsampling(torch.nn.Module):
    def __init__(self, channels, d_model, input_dim=80):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, channels, 3, stride=2)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, stride=2)
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.project = torch.nn.Linear(channels * freq, d_model)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x.unsqueeze(1)))))
        b, c, t, f = h.shape
        return self.project(h.permute(0, 2, 1, 3).reshape(b, t, c * f))


def main():
    p = argparse.ArgumentParser()
    for name, default in [("d-model", 144), ("ffn-dim", 576), ("heads", 4), ("layers", 4), ("kernel", 31),
                          ("channels", 144), ("vocab", 100), ("batch", 8), ("warmup", 3), ("steps", 10),
                          ("threads", 2)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    front = Subsampling(a.channels, a.d_model)
    conformer = torchaudio.models.Conformer(input_dim=a.d_model, num_heads=a.heads, ffn_dim=a.ffn_dim,
                                            num_layers=a.layers, depthwise_conv_kernel_size=a.kernel, dropout=0.1)
    head = torch.nn.Linear(a.d_model, a.vocab)
    params = list(front.parameters()) + list(conformer.parameters()) + list(head.parameters())
    adam = torch.optim.Adam(params, lr=1e-4)
    frames = int(a.seconds * 100)
    feats = torch.randn(a.batch, frames, 80)
    label_len = int(a.seconds * 12)
    targets = torch.randint(2, a.vocab, (a.batch, label_len))
    target_lengths = torch.full((a.batch,), label_len, dtype=torch.long)
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        adam.zero_grad()
        x = front(feats)
        lengths = torch.full((a.batch,), x.shape[1], dtype=torch.long)
        y, lengths = conformer(x, lengths)
        log_probs = torch.log_softmax(head(y), -1)
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths,
                                            blank=0, zero_infinity=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        adam.step()
        if step >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(f"peer:  {sum(q.numel() for q in params)} parameters, median {times[len(times) // 2]:.1f} ms/step "
          f"over {a.steps} steps (torch {torch.__version__}, torchaudio {torchaudio.__version__})")


if __name__ == "__main__":
    main()
