#!/usr/bin/python3
"""RNN-T losses and gradients from torchaudio's own kernel (torch.ops.torchaudio.rnnt_loss in Debian's
python3-torchaudio, libtorchaudio.so), the independent reference for plugins/loss/rnnt/rnnt_loss.cpp
(tests/test_rnnt.cpp, within 1e-4).

For each case it writes tests/data/rnnt_golden/<case>/:
  logits.npy          (B, T, U+1, V) float32 raw joiner outputs
  targets.npy         (B, U) int32, padded with 0 after each row's length
  logit_lengths.npy   (B) int32
  target_lengths.npy  (B) int32
  costs.npy           (B) float32, torchaudio's per-row negative log-likelihood
  gradients.npy       (B, T, U+1, V) float32, d(sum of costs)/d(logits) (log_softmax fused into the kernel, no clamp)

  sudo apt-get install python3-torchaudio
  /usr/bin/python3 tests/golden/make_rnnt_golden.py
"""
import os

import numpy as np
import torch
import torchaudio  # noqa: F401  (registers torch.ops.torchaudio)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "rnnt_golden")

# (name, B, T, U, V, seed, logit_lengths, target_lengths): full rows, padded rows of mixed lengths, an
# empty target, a single frame, and logits of a large scale (peaked posteriors).
CASES = [
    ("full", 2, 5, 3, 6, 1, [5, 5], [3, 3]),
    ("padded", 3, 7, 4, 5, 2, [7, 4, 6], [4, 2, 0]),
    ("single_frame", 2, 3, 2, 4, 3, [1, 3], [1, 2]),
    ("peaked", 2, 6, 3, 8, 4, [6, 5], [3, 2]),
]


def main():
    for name, B, T, U, V, seed, tl, ul in CASES:
        g = torch.Generator().manual_seed(seed)
        scale = 6.0 if name == "peaked" else 1.0
        logits = (torch.randn(B, T, U + 1, V, generator=g) * scale).float()
        targets = torch.randint(1, V, (B, U), generator=g, dtype=torch.int32)
        for b, u in enumerate(ul):
            targets[b, u:] = 0
        logit_lengths = torch.tensor(tl, dtype=torch.int32)
        target_lengths = torch.tensor(ul, dtype=torch.int32)
        costs, gradients = torch.ops.torchaudio.rnnt_loss(logits, targets, logit_lengths, target_lengths, 0, -1.0)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "logits.npy"), logits.numpy())
        np.save(os.path.join(d, "targets.npy"), targets.numpy())
        np.save(os.path.join(d, "logit_lengths.npy"), logit_lengths.numpy())
        np.save(os.path.join(d, "target_lengths.npy"), target_lengths.numpy())
        np.save(os.path.join(d, "costs.npy"), costs.float().numpy())
        np.save(os.path.join(d, "gradients.npy"), gradients.float().numpy())
        print(name, costs.tolist())


if __name__ == "__main__":
    main()
