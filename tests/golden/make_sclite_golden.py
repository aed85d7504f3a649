#!/usr/bin/python3
"""Word error counts from NIST's sclite (Debian package sctk) on a fixed set of references and hypotheses,
the independent reference for our WER (core/src/edit_distance.cpp, tests/test_error_rates.cpp).

Writes tests/data/sclite/{ref,hyp}.trn (one "words (id)" line each) and sclite's raw summary of them,
tests/data/sclite/sclite_rsum.txt, whose "Sum" line gives the corpus's words, substitutions, deletions,
insertions and errors.

  sudo apt-get install sctk
  /usr/bin/python3 tests/golden/make_sclite_golden.py
"""
import os
import subprocess

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sclite")
SCLITE = "/usr/lib/sctk/bin/sclite"

# (reference, hypothesis): substitutions, deletions, insertions, repeats, an empty hypothesis, a
# hypothesis of insertions only, Cyrillic and accented words (compared as whole words).
PAIRS = [
    ("the cat sat on the mat", "the cat sit on mat"),
    ("hello world", "hello big world"),
    ("please enter your mailbox number", "please enter your mail box number"),
    ("one two three four five", ""),
    ("goodbye", "goodbye goodbye goodbye"),
    ("a b c d e f", "f e d c b a"),
    ("привет мир как дела", "привет мир как дела"),
    ("привет мир", "привет мера"),
    ("café crème brûlée", "cafe crème brûlée"),
    ("the the the", "the"),
    ("to be or not to be", "to be or not to be that is"),
    ("your call is important to us", "you call is important to us please hold"),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ref.trn"), "w", encoding="utf-8") as ref, \
            open(os.path.join(OUT, "hyp.trn"), "w", encoding="utf-8") as hyp:
        for i, (r, h) in enumerate(PAIRS):
            ref.write(f"{r} (spk_{i:02d})\n")
            hyp.write(f"{h} (spk_{i:02d})\n")
    out = subprocess.run([SCLITE, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-o", "rsum", "stdout"],
                         cwd=OUT, check=True, capture_output=True, text=True).stdout
    with open(os.path.join(OUT, "sclite_rsum.txt"), "w", encoding="utf-8") as f:
        f.write(out)
    print(next(line for line in out.splitlines() if "| Sum " in line))


if __name__ == "__main__":
    main()
