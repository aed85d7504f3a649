#!/usr/bin/python3
"""Peer for bench/fbank.cpp: torchaudio.compliance.kaldi.fbank on the same waveform, options and threads.

Reads the waveform (int16 units, float32 .npy) that the C++ benchmark wrote, times the filterbank (best
of --reps), writes its features to --out (.npy) for the benchmark to compare, and prints one line:
"peer: T frames, best MS ms". Needs WITH_PYTHON_PEER=1 ./scripts/install-deps.sh (python3-numpy too). Debian's python3-torch and python3-torchaudio link the same libtorch.
"""
import argparse
import time

import numpy as np

import torch
import torchaudio.compliance.kaldi as kaldi


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wave", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    wave = torch.from_numpy(np.load(a.wave)).unsqueeze(0)
    # The workbench defaults (core/include/workbench/fbank.h), spelled out as kaldi.fbank's options.
    options = dict(num_mel_bins=80, sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0,
                   preemphasis_coefficient=0.97, low_freq=20.0, high_freq=0.0, remove_dc_offset=True,
                   snip_edges=True, window_type="povey", round_to_power_of_two=True, use_log_fbank=True,
                   use_power=True, dither=0.0, energy_floor=0.0)
    best = float("inf")
    with torch.no_grad():
        for _ in range(a.reps):
            t0 = time.perf_counter()
            feats = kaldi.fbank(wave, **options)
            best = min(best, (time.perf_counter() - t0) * 1e3)
    np.save(a.out, feats.numpy().astype(np.float32))
    print(f"peer: {feats.shape[0]} frames, best {best:.3f} ms")


if __name__ == "__main__":
    main()
