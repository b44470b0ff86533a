#!/usr/bin/env python3
# Usage: python3 fuzz/make_control_seeds.py fuzz/seeds/control_frame
# Writes one valid control-channel frame of each kind (control version 1), built from the frame
# spec in transport/src/control/frame.rs alone, so that the replay in transport/tests/fuzz_replay.rs
# also checks that the decoder agrees with the documented layout.
import os, struct, sys

def header(kind, frame_id):
    # magic, version, kind, reserved u16, id
    return struct.pack('<4sBBHQ', b'SHMC', 1, kind, 0, frame_id)

frames = {
    # publish: count, reserved u32, seed, deadline_ns
    'publish': header(1, 7) + struct.pack('<IIQQ', 1000, 0, 42, 123_456_789_000),
    # release: slot, reserved u32, generation
    'release': header(2, 7) + struct.pack('<IIQ', 3, 0, 26),
    # published: epoch, slot, len, generation, crc, reserved u32
    'published': header(3, 9) + struct.pack('<QIIQII', 0x9f86d081884c7d65, 3, 256_873, 26,
                                            0x5d41402a, 0),
    # refused: code u16, reserved 6 bytes, detail (PeerBusy = 4, limit 32)
    'refused_peer_busy': header(4, 1) + struct.pack('<H6sQ', 4, bytes(6), 32),
    # refused: TooLarge = 2, detail = the largest payload that fits
    'refused_too_large': header(4, 2) + struct.pack('<H6sQ', 2, bytes(6), 4096),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, frame in frames.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(frame)
