#!/usr/bin/env python3
"""Writes the hand-made seed corpora of the protocol fuzz targets.

client_frame: one text frame each, a client's (every op, ids of each kind, the errors
the decoder must explain) or the server's (every frame type).
validation: one byte choosing the text limit (limit = byte + 1 characters), then the
string checked as a room name, a text, a key, a user id and a topic.
Run from anywhere: `python3 crates/protocol/fuzz/make_seeds.py`.
"""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent

CLIENT_FRAME = {
    "join": '{"op":"join","id":1,"room":"general"}',
    "join-since": '{"op":"join","id":"j","room":"general","since":41,"limit":10}',
    "join-since-1e400": '{"op":"join","id":"j1","room":"general","since":1e400}',
    "leave": '{"op":"leave","room":"general"}',
    "send": '{"op":"send","id":2,"room":"general","text":"h\\u00e9llo \\u0000 \\ud83d\\ude00","key":"c-1","reply_to":3}',
    "history": '{"op":"history","id":3,"room":"r","before":10,"after":2,"limit":200}',
    "typing": '{"op":"typing","room":"r"}',
    "ping": '{"op":"ping","id":-9223372036854775808}',
    "members": '{"op":"members","id":4,"room":"r","cursor":"17","limit":1000}',
    "create": '{"op":"create","id":5,"room":"ops","kind":"private","topic":"about"}',
    "add-member": '{"op":"add_member","id":6,"room":"ops","user":"alice","role":"moderator"}',
    "remove-member": '{"op":"remove_member","id":7,"room":"ops","user":"alice"}',
    "set-role": '{"op":"set_role","id":8,"room":"ops","user":"alice","role":"owner"}',
    "kick": '{"op":"kick","id":9,"room":"ops","user":"bob","duration_secs":60,"reason":"spam"}',
    "ban": '{"op":"ban","id":10,"room":"ops","user":"bob"}',
    "unban": '{"op":"unban","id":11,"room":"ops","user":"bob"}',
    "mute": '{"op":"mute","id":12,"room":"ops","user":"bob","duration_secs":315360000}',
    "unmute": '{"op":"unmute","id":13,"room":"ops","user":"bob"}',
    "refresh": '{"op":"refresh","id":14,"token":"a.b.c"}',
    "unknown-op": '{"op":"dance","id":15}',
    "op-not-string": '{"op":7,"id":16}',
    "id-object": '{"op":"ping","id":{"x":1}}',
    "id-too-big": '{"op":"ping","id":18446744073709551616}',
    "not-object": '[1,2,3]',
    "broken": '{"op":"send","id":1,"room":',
    "deep": '{"op":"ping","x":' + "[" * 200 + "]" * 200 + "}",
    "bad-room": '{"op":"join","id":"r","room":"../etc/passwd"}',
    "duplicate-field": '{"op":"send","op":"ping","id":1,"room":"r","text":"a","text":"b"}',
    "server-welcome": '{"type":"welcome","protocol":1,"server":"bavard 0.1.0","user":{"id":"g_0123456789abcdef","name":"guest-0123"},"session":"s1","limits":{"max_frame_bytes":65536,"max_text_chars":4000}}',
    "server-reply": '{"type":"reply","id":2,"ok":true,"room":"general","seq":4,"ts":"2026-12-02T15:00:00.000Z","duplicate":true}',
    "server-reply-error": '{"type":"reply","id":"x","ok":false,"error":{"code":"rate_limited","message":"slow down"}}',
    "server-error": '{"type":"error","error":{"code":"some_new_code","message":"?"}}',
    "server-message": '{"type":"message","room":"general","seq":7,"ts":"2026-12-02T15:00:00Z","from":{"id":"u","name":"U"},"text":"hi","key":"k","reply_to":6}',
    "server-presence": '{"type":"presence","room":"r","joined":[{"id":"a","name":"A"}],"left":[],"member_count":1}',
    "server-typing": '{"type":"typing","room":"r","user":{"id":"a","name":"A"}}',
    "server-occupancy": '{"type":"occupancy","room":"r","member_count":1001}',
    "server-removed": '{"type":"removed","room":"r","action":"ban","reason":"spam","until":"2027-01-01T00:00:00Z"}',
    "server-closing": '{"type":"closing","reason":"shutting down"}',
    "server-unknown": '{"type":"from_the_future","x":1}',
}

VALIDATION = {
    "name-plain": (3, "general"),
    "name-alphabet": (255, "General-2.0_x"),
    "name-64": (63, "x" * 64),
    "name-65": (63, "x" * 65),
    "name-path": (0, "../etc/passwd"),
    "name-space": (10, "with space"),
    "name-accent": (1, "caf\u00e9"),
    "text-empty": (0, ""),
    "text-one-over": (3, "abcde"),
    "text-emoji": (1, "\U0001F600\U0001F600"),
    "text-nul": (9, "\x00" * 10),
    "text-control": (40, "line\nbreak\ttab\x1b[31m"),
    "key-65": (255, "k" * 65),
    "user-129": (255, "u" * 129),
    "topic-257": (255, "t" * 257),
    "rtl-and-zero-width": (20, "\u202egnp.exe\u200b"),
}


def write(target, seeds):
    out = HERE / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (out / f"seed-{name}").write_bytes(data)


write("client_frame", {name: text.encode() for name, text in CLIENT_FRAME.items()})
write("validation", {name: bytes([limit]) + text.encode() for name, (limit, text) in VALIDATION.items()})
