#!/usr/bin/env python3
# Usage: python3 fuzz/make_segment_seed.py > fuzz/seeds/segment_attach/two_slots_one_ready
# Builds a valid 2-slot segment image from the layout spec in transport/src/layout.rs alone,
# with slot 0 READY (generation 2) holding a small payload and slot 1 FREE.
import struct, zlib, sys
slot_count, slot_size = 2, 64
payload_offset = ((128 + 64 * slot_count) + 4095) // 4096 * 4096
total = payload_offset + slot_count * slot_size
head = struct.pack('<8sIIQQIIQQQIIQ', b'SHMBRDG\0', 1, 128, 0x1234567890abcdef, 1, slot_count, slot_size,
                   128, payload_offset, total, 1, 0, 1)
assert len(head) == 80
header = head + struct.pack('<I', zlib.crc32(head)) + bytes(44)
payload = b'{"users":[]}'
gen = 2
desc0 = struct.pack('<QQQQIII', (gen << 8) | 2, gen, 10**18, 1, 1, len(payload), zlib.crc32(payload)) + bytes(20)
image = bytearray(total)
image[:128] = header
image[128:192] = desc0
image[payload_offset:payload_offset + len(payload)] = payload
sys.stdout.buffer.write(bytes(image))
