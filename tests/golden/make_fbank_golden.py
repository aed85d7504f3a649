#!/usr/bin/python3
"""Generates the golden files in tests/data/ for tests/test_fbank.cpp and tests/test_audio.cpp.

Run ONCE, by hand, and check the outputs in; the C++ tests only read the files and never need Python:

    /usr/bin/python3 tests/golden/make_fbank_golden.py            # writes into tests/data/
    /usr/bin/python3 tests/golden/make_fbank_golden.py --out DIR  # writes somewhere else

Requirements: Debian's python3-torch 1.13.1, python3-torchaudio 0.13.1 (sox_io backend), python3-numpy,
and the Asterisk English prompts (asterisk-core-sounds-en-wav, /usr/share/asterisk/sounds/en/hello-world.wav,
8 kHz mono 16-bit, CC BY-SA 3.0, see tests/data/README.md). Re-running with the same package versions
reproduces the files bit for bit; re-running with other versions may change the last bits of the goldens
(tests compare with a 1e-3 tolerance) and of the resampled WAV.

Outputs (all small; keep tests/data/ under 200 KB):
  speech_16k.wav            hello-world.wav resampled 8 kHz -> 16 kHz (torchaudio sinc resampler), int16 PCM
  fbank_default.npy         torchaudio.compliance.kaldi.fbank of speech_16k.wav, options CASES["default"]
  fbank_variant.npy         ... CASES["variant"]  (40 bins, hamming, no pre-emphasis, no DC removal,
                            snip_edges=False, custom mel range)
  fbank_rect_mag.npy        ... CASES["rect_mag"] (23 bins, rectangular, 20 ms / 12.5 ms frames,
                            no power-of-two padding, magnitude spectrum)
  fbank_hann_linear.npy     ... CASES["hann_linear"] (24 bins, hanning, linear (not log) mel energies)
  stereo_22k.wav           deterministic synthetic stereo: 0.1 s at 22050 Hz, left 0.5*sin(2pi 440 t),
                            right 0.25*sin(2pi 1000 t + 0.3), int16 PCM WAV
  stereo_22k_mono.npy       float32 expected mono mix (L + R) / 2 of stereo_22k.wav in [-1, 1) units

The fbank input is read back from the written WAV (so it is bit-identical to what the C++ test reads) and
scaled by 32768 to int16 units, the Kaldi convention that workbench::compute_fbank also uses.
The keys of each CASES entry are the workbench::FbankOptions setters; KALDI_NAMES maps them to torchaudio.
"""
import argparse
import math
import os

import numpy as np
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

SOURCE_WAV = "/usr/share/asterisk/sounds/en/hello-world.wav"

# Every case lists all options explicitly (workbench defaults), so the C++ test can mirror it one to one.
BASE = dict(num_mel_bins=80, sample_rate=16000.0, frame_length_ms=25.0, frame_shift_ms=10.0, preemphasis=0.97,
            low_freq=20.0, high_freq=0.0, remove_dc_offset=True, snip_edges=True, window="povey",
            round_to_power_of_two=True, use_log_fbank=True, use_power=True)
CASES = {
    "default": dict(BASE),
    "variant": dict(BASE, num_mel_bins=40, window="hamming", preemphasis=0.0, remove_dc_offset=False,
                    snip_edges=False, low_freq=60.0, high_freq=-400.0),
    "rect_mag": dict(BASE, num_mel_bins=23, window="rectangular", frame_length_ms=20.0, frame_shift_ms=12.5,
                     round_to_power_of_two=False, use_power=False),
    "hann_linear": dict(BASE, num_mel_bins=24, window="hanning", use_log_fbank=False),
}
KALDI_NAMES = dict(num_mel_bins="num_mel_bins", sample_rate="sample_frequency", frame_length_ms="frame_length",
                   frame_shift_ms="frame_shift", preemphasis="preemphasis_coefficient", low_freq="low_freq",
                   high_freq="high_freq", remove_dc_offset="remove_dc_offset", snip_edges="snip_edges",
                   window="window_type", round_to_power_of_two="round_to_power_of_two",
                   use_log_fbank="use_log_fbank", use_power="use_power")


def save_int16(path, samples_int16, rate, **kwargs):
    wav = torch.from_numpy(samples_int16.astype(np.int16))
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    torchaudio.save(path, wav, rate, **kwargs)


def make_speech(out_dir):
    wav, rate = torchaudio.load(SOURCE_WAV)
    assert rate == 8000 and wav.shape[0] == 1, (rate, wav.shape)
    up = torchaudio.functional.resample(wav.double(), 8000, 16000)[0]
    q = torch.clamp(torch.round(up * 32768.0), -32768, 32767).to(torch.int16).numpy()
    path = os.path.join(out_dir, "speech_16k.wav")
    save_int16(path, q, 16000, encoding="PCM_S", bits_per_sample=16)
    # Read back: the fbank input must be exactly what the C++ side decodes.
    back, back_rate = torchaudio.load(path)
    assert back_rate == 16000
    assert torch.equal((back[0] * 32768.0).round().to(torch.int16), torch.from_numpy(q))
    return back[0] * 32768.0


def make_fbanks(out_dir, waveform):
    for name, case in CASES.items():
        kwargs = {KALDI_NAMES[k]: v for k, v in case.items()}
        feats = kaldi.fbank(waveform.unsqueeze(0), dither=0.0, energy_floor=0.0, use_energy=False, **kwargs)
        np.save(os.path.join(out_dir, f"fbank_{name}.npy"), feats.numpy().astype(np.float32))
        print(f"fbank_{name}.npy: shape {tuple(feats.shape)}, range [{feats.min():.3f}, {feats.max():.3f}]")


def make_stereo(out_dir):
    rate = 22050
    n = rate // 10
    t = np.arange(n) / rate
    left = np.round(0.5 * np.sin(2 * math.pi * 440.0 * t) * 32768.0)
    right = np.round(0.25 * np.sin(2 * math.pi * 1000.0 * t + 0.3) * 32768.0)
    both = np.stack([left, right]).clip(-32768, 32767).astype(np.int16)
    save_int16(os.path.join(out_dir, "stereo_22k.wav"), both, rate, encoding="PCM_S", bits_per_sample=16)
    mono = ((both[0].astype(np.float64) + both[1].astype(np.float64)) / 2.0 / 32768.0).astype(np.float32)
    np.save(os.path.join(out_dir, "stereo_22k_mono.npy"), mono)
    back, back_rate = torchaudio.load(os.path.join(out_dir, "stereo_22k.wav"))
    assert back_rate == rate and torch.equal((back * 32768.0).round().to(torch.int16), torch.from_numpy(both))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data")))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    waveform = make_speech(args.out)
    make_fbanks(args.out, waveform)
    make_stereo(args.out)
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
