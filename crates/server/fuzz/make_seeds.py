#!/usr/bin/env python3
"""Writes the hand-made seed corpus of the jwt_verify fuzz target.

Each seed is one configuration byte (bits 0-2: the verifier: 0 HS256, 1 HS256 with
audience "bavard" and issuer "https://issuer.example", 2 RS256, 3 ES256, 4 EdDSA; bit 3:
the target signs the token with that verifier's key; RS256 inputs signed go to HS256), the clock (u32 seconds, little
endian), then the token's text, or (signed) the header and the claims separated by 0xff.
Run from anywhere: `python3 crates/server/fuzz/make_seeds.py`.
"""

import base64
import json
import pathlib
import struct

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "jwt_verify"
NOW = 1_800_000_000
ALGS = ["HS256", "HS256", "RS256", "ES256", "EdDSA"]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed(verifier, claims, header=None, raw_claims=None):
    header = header if header is not None else {"alg": ALGS[verifier], "typ": "JWT"}
    body = json.dumps(header).encode() + b"\xff" + (raw_claims or json.dumps(claims).encode())
    return bytes([verifier | 8]) + struct.pack("<I", NOW) + body


def text(verifier, token):
    return bytes([verifier]) + struct.pack("<I", NOW) + token.encode()


GOOD = {"sub": "alice", "exp": NOW + 3600, "name": "  Alice  ", "role": "admin"}
SEEDS = {
    "hs256-good": signed(0, GOOD),
    "hs256-aud-iss-good": signed(1, dict(GOOD, aud=["other", "bavard"], iss="https://issuer.example")),
    "hs256-aud-wrong": signed(1, dict(GOOD, aud="other", iss="https://issuer.example")),
    "hs256-aud-not-string": signed(1, dict(GOOD, aud=[1], iss="https://issuer.example")),
    "rs256-unsigned-junk": text(2, (b64(b'{"alg":"RS256"}') + b"." + b64(json.dumps(GOOD).encode()) + b"." + b64(b"x" * 256)).decode()),
    "es256-good": signed(3, dict(GOOD, nbf=NOW - 10)),
    "eddsa-good": signed(4, dict(GOOD, sub="\u00e9l\u00e8ve-\U0001F600")),
    "expired": signed(0, dict(GOOD, exp=NOW)),
    "not-yet": signed(0, dict(GOOD, nbf=NOW + 1)),
    "exp-float": signed(0, dict(GOOD, exp=1.9e9)),
    "exp-huge": signed(0, dict(GOOD, exp=1e300)),
    "exp-negative": signed(0, dict(GOOD, exp=-1)),
    "exp-string": signed(0, dict(GOOD, exp="2030")),
    "sub-guest": signed(0, dict(GOOD, sub="g_0123456789abcdef")),
    "sub-api": signed(0, dict(GOOD, sub="api:bot")),
    "sub-control": signed(0, dict(GOOD, sub="a\nb")),
    "sub-long": signed(0, dict(GOOD, sub="s" * 129)),
    "sub-number": signed(0, dict(GOOD, sub=7)),
    "name-long": signed(0, dict(GOOD, name="n" * 40)),
    "crit": signed(0, GOOD, header={"alg": "HS256", "crit": ["exp"]}),
    "alg-none-signed": signed(0, GOOD, header={"alg": "none"}),
    "alg-other": signed(3, GOOD, header={"alg": "HS256"}),
    "claims-not-object": signed(0, None, raw_claims=b"[1,2]"),
    "claims-not-json": signed(0, None, raw_claims=b"\xc3\x28{"),
    "alg-none-unsigned": text(0, (b64(b'{"alg":"none"}') + b"." + b64(json.dumps(GOOD).encode()) + b".").decode()),
    "hs256-bad-signature": text(0, (b64(b'{"alg":"HS256"}') + b"." + b64(json.dumps(GOOD).encode()) + b".c2ln").decode()),
    "rs256-not-base64": text(2, "eyJhbGciOiJSUzI1NiJ9.!!!.???"),
    "two-parts": text(3, "a.b"),
    "four-parts": text(4, "a.b.c.d"),
    "empty": text(0, ""),
}

OUT.mkdir(parents=True, exist_ok=True)
for old in OUT.glob("seed-*"):
    old.unlink()
for name, data in SEEDS.items():
    (OUT / f"seed-{name}").write_bytes(data)
