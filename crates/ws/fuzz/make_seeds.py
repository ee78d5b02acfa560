#!/usr/bin/env python3
"""Writes the hand-made seed corpus of the frame_parser fuzz target.

Each seed is one configuration byte, then frames as a client (or, with bit 3 of the
configuration set, a server) would send them: bits 0-2 pick the message limit
(0, 1, 7, 125, 126, 300, 4096, 65536 bytes), bits 4-7 the read size minus one.
Run from anywhere: `python3 crates/ws/fuzz/make_seeds.py`.
"""

import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "frame_parser"
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(opcode, payload, fin=True, mask=MASK, rsv=0, length_form=None):
    """One frame; `length_form` forces the 16- or 64-bit length encoding."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if length_form == 64 or n > 0xFFFF:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    elif length_form == 16 or n > 125:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | n])
    if mask:
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def config(limit_index, client_role=False, chunk=1):
    return bytes([limit_index | (8 if client_role else 0) | ((chunk - 1) << 4)])


LIMIT_4096 = 6
SEEDS = {
    "text": config(LIMIT_4096, chunk=3) + frame(1, b"hello"),
    "text-fragments-cut-character": config(LIMIT_4096, chunk=5)
    + frame(1, "h\u00e9llo ".encode()[:2], fin=False)
    + frame(0, "h\u00e9llo ".encode()[2:], fin=False)
    + frame(0, "w\u00f6rld \U0001d11e".encode()),
    "binary-fragments-and-ping": config(LIMIT_4096, chunk=7)
    + frame(2, bytes(range(10)), fin=False)
    + frame(9, b"ping")
    + frame(0, bytes(range(10, 20))),
    "ping-pong": config(LIMIT_4096, chunk=16) + frame(9, b"") + frame(10, b"pong payload"),
    "close-with-reason": config(LIMIT_4096) + frame(8, struct.pack(">H", 1000) + b"bye"),
    "close-empty-then-ignored-text": config(LIMIT_4096, chunk=2) + frame(8, b"") + frame(1, b"ignored"),
    "length-16": config(LIMIT_4096, chunk=16) + frame(1, b"x" * 300),
    "length-64-not-minimal": config(LIMIT_4096, chunk=16) + frame(2, b"y" * 200, length_form=64),
    "too-big-frame": config(3, chunk=16) + frame(1, b"z" * 200),
    "too-big-fragments": config(2, chunk=4) + frame(1, b"abcd", fin=False) + frame(0, b"efgh"),
    "unmasked-from-client": config(LIMIT_4096) + frame(1, b"hi", mask=None),
    "unmasked-read-by-client": config(LIMIT_4096, client_role=True, chunk=3)
    + frame(1, b"server text", mask=None)
    + frame(2, b"\x00\x01", fin=False, mask=None)
    + frame(0, b"\x02", mask=None),
    "reserved-bits": config(LIMIT_4096) + frame(1, b"x", rsv=0x40),
    "reserved-opcode": config(LIMIT_4096) + frame(3, b"x"),
    "invalid-utf8": config(LIMIT_4096) + frame(1, b"ok\xff\xfe"),
    "invalid-utf8-across-fragments": config(LIMIT_4096, chunk=2)
    + frame(1, b"ok\xe2", fin=False)
    + frame(0, b"\x41"),
    "fragmented-control": config(LIMIT_4096) + frame(9, b"x", fin=False),
    "close-code-1005": config(LIMIT_4096) + frame(8, struct.pack(">H", 1005)),
    "continuation-without-start": config(LIMIT_4096) + frame(0, b"x"),
    "data-inside-fragmented-message": config(LIMIT_4096) + frame(1, b"a", fin=False) + frame(1, b"b"),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / f"seed-{name}").write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()
