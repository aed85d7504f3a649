#!/usr/bin/env python3
"""Writes the hostile input files of tests/test_hostile_inputs.cpp into this folder (docs/reliability.md
lists them with what each must give). Run once from anywhere: python3 tests/data/hostile/make_cases.py.
The audio is synthetic (a 300 Hz tone with a little noise), written with Python's wave module and, for
FLAC and Ogg/Vorbis, with libsndfile through ctypes; the damage is done byte by byte here, so that each
file is damaged in a known way. The files are small (under 40 kB each) and kept in git."""
import ctypes
import ctypes.util
import math
import pathlib
import random
import struct
import wave

HERE = pathlib.Path(__file__).resolve().parent
RATE = 16000


def tone(seconds, rate=RATE):
    rng = random.Random(7)
    n = int(seconds * rate)
    return [0.3 * math.sin(2 * math.pi * 300 * t / rate) + 0.01 * rng.uniform(-1, 1) for t in range(n)]


def pcm16(samples):
    return b"".join(struct.pack("<h", max(-32768, min(32767, int(round(s * 32767))))) for s in samples)


def write_wav(path, samples, rate=RATE):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16(samples))


class SF_INFO(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


def write_sndfile(path, samples, fmt):
    lib = ctypes.CDLL(ctypes.util.find_library("sndfile") or "libsndfile.so.1")
    lib.sf_open.restype = ctypes.c_void_p
    lib.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(SF_INFO)]
    lib.sf_writef_float.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64]
    lib.sf_close.argtypes = [ctypes.c_void_p]
    info = SF_INFO(0, RATE, 1, fmt, 0, 0)
    f = lib.sf_open(str(path).encode(), 0x20, ctypes.byref(info))  # SFM_WRITE
    if not f:
        raise SystemExit(f"libsndfile cannot write {path}")
    buf = (ctypes.c_float * len(samples))(*samples)
    lib.sf_writef_float(f, buf, len(samples))
    lib.sf_close(f)


def main():
    good = tone(1.0)
    # The good ones, kept for the tests' control rows.
    write_wav(HERE / "good.wav", good)
    write_sndfile(HERE / "good.flac", good, 0x170000 | 0x0002)  # SF_FORMAT_FLAC | PCM_16
    write_sndfile(HERE / "good.ogg", good, 0x200000 | 0x0060)   # SF_FORMAT_OGG | VORBIS

    wav = (HERE / "good.wav").read_bytes()
    flac = (HERE / "good.flac").read_bytes()
    ogg = (HERE / "good.ogg").read_bytes()
    # Truncated: the second half of each file is gone (the WAV header still promises 1 s).
    (HERE / "truncated.wav").write_bytes(wav[: len(wav) // 2])
    (HERE / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    (HERE / "truncated.ogg").write_bytes(ogg[: len(ogg) // 2])
    # Corrupt: 200 bytes a third of the way in XOR 0x5a.
    for name, data in (("corrupt.flac", flac), ("corrupt.ogg", ogg)):
        d = bytearray(data)
        for k in range(len(d) // 3, len(d) // 3 + 200):
            d[k] ^= 0x5A
        (HERE / name).write_bytes(bytes(d))
    # A header that lies: the data chunk claims 2 GB, the file holds 1 s.
    lying = bytearray(wav)
    data_at = lying.find(b"data")
    lying[data_at + 4 : data_at + 8] = struct.pack("<I", 0x7FFFFFF0)
    (HERE / "lying_header.wav").write_bytes(bytes(lying))
    # Zero-length (no bytes at all), a header with no frames, and audio shorter than one 25 ms frame.
    (HERE / "empty.wav").write_bytes(b"")
    write_wav(HERE / "no_frames.wav", [])
    write_wav(HERE / "subframe.wav", tone(0.01))  # 160 samples: 10 ms
    # Not audio at all, with an audio extension.
    (HERE / "not_audio.flac").write_text("this is a text file that says it is FLAC\n")


if __name__ == "__main__":
    main()
