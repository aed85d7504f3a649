#!/usr/bin/env python3
"""Writes the audio fuzzer's seed corpus (fuzz/seeds/audio): one short file per container and sample
format that read_audio meets in a corpus, so that libFuzzer starts from each decoder's valid input.
0.05 s each, to keep every input small and the fuzzer fast. Run once: python3 fuzz/seeds/make_audio_seeds.py.
Reuses the writers of tests/data/hostile/make_cases.py (Python's wave module, and libsndfile via ctypes)."""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests" / "data" / "hostile"))
import make_cases  # noqa: E402

OUT = HERE / "audio"


def main():
    OUT.mkdir(exist_ok=True)
    short = make_cases.tone(0.05)
    make_cases.write_wav(OUT / "pcm16.wav", short)
    make_cases.write_wav(OUT / "pcm16_8k.wav", make_cases.tone(0.05, 8000), rate=8000)
    for name, fmt in (("float.wav", 0x010000 | 0x0006),    # WAV | FLOAT
                      ("ulaw.wav", 0x010000 | 0x0010),     # WAV | ULAW
                      ("pcm24.flac", 0x170000 | 0x0003),   # FLAC | PCM_24
                      ("vorbis.ogg", 0x200000 | 0x0060),   # OGG | VORBIS
                      ("opus.opus", 0x200000 | 0x0064),    # OGG | OPUS
                      ("pcm16.aiff", 0x020000 | 0x0002)):  # AIFF | PCM_16
        make_cases.write_sndfile(OUT / name, short, fmt)


if __name__ == "__main__":
    main()
