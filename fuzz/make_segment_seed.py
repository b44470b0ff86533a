#!/usr/bin/env python3
# Usage: python3 fuzz/make_segment_seed.py > fuzz/seeds/segment_attach/two_slots_one_ready
# Builds a valid 2-slot segment image (layout version 2) from the layout spec in
# transport/src/layout.rs alone, with slot 0 READY (generation 2) holding a small payload and
# slot 1 FREE at generation 0.
import struct, zlib, sys
FREE, READY = 1, 3
slot_count, slot_size = 2, 64
payload_offset = ((128 + 64 * slot_count) + 4095) // 4096 * 4096
total = payload_offset + slot_count * slot_size
head = struct.pack('<8sIIQQIIQQQIIQ', b'SHMBRDG\0', 2, 128, 0x1234567890abcdef, 1, slot_count, slot_size,
                   128, payload_offset, total, 1, 0, 1)
assert len(head) == 80
header = head + struct.pack('<I', zlib.crc32(head)) + bytes(44)
payload = b'{"users":[]}'
gen = 2
def tagged(value):
    # tag = low 24 bits of the generation the value was written for, value = 40 bits
    return ((gen & 0xFFFFFF) << 40) | value
# state, owner pid/start time/pidfs inode (unused while READY), TTL end in ms, len, crc, reserved
desc0 = struct.pack('<8Q', (gen << 8) | READY, 0, 0, 0, tagged(10**12), tagged(len(payload)),
                    tagged(zlib.crc32(payload)), 0)
desc1 = struct.pack('<8Q', FREE, 0, 0, 0, 0, 0, 0, 0)
image = bytearray(total)
image[:128] = header
image[128:192] = desc0
image[192:256] = desc1
# The payload is little-endian 64-bit words: byte order in memory is the byte order of the payload.
image[payload_offset:payload_offset + len(payload)] = payload
sys.stdout.buffer.write(bytes(image))
