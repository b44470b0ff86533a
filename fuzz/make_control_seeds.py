#!/usr/bin/env python3
# Usage: python3 fuzz/make_control_seeds.py fuzz/seeds/control_frame
# Writes valid control-channel frames of every kind (control version 4: publish with an opaque
# request, release, published inline/slot/sealed with a response head, a sealed body of a slot's
# size included, one naming an object version, a refusal of every code, board request and board),
# plus one frame each of versions 1, 2 and 3, built from the frame spec in the module doc of
# transport/src/control/frame.rs alone, so that the replay in transport/tests/fuzz_replay.rs also
# checks that the decoder agrees with the documented layout. Every multi-byte field is
# little-endian.
import os, struct, sys, zlib

VERSION = 4
PUBLISH, RELEASE, PUBLISHED, REFUSED, BOARD_REQUEST, BOARD = 1, 2, 3, 4, 5, 6
INLINE, SLOT, SEALED = 1, 2, 3


def header(kind, frame_id, version=VERSION):
    # magic, version u8, kind u8, reserved u16, id u64: 16 bytes
    return struct.pack('<4sBBHQ', b'SHMC', version, kind, 0, frame_id)


def publish(frame_id, deadline_ns, request):
    # deadline_ns u64, request_len u32, reserved u32, then the request: 32 + request_len bytes
    return header(PUBLISH, frame_id) + struct.pack('<QII', deadline_ns, len(request), 0) + request


def release(frame_id, slot, generation):
    # slot u32, reserved u32, generation u64: 32 bytes
    return header(RELEASE, frame_id) + struct.pack('<IIQ', slot, 0, generation)


def head(content_type=b'', headers=()):
    # u16 content-type length and its bytes, u16 header count, then per header u16 name length,
    # name, u16 value length, value
    out = struct.pack('<H', len(content_type)) + content_type + struct.pack('<H', len(headers))
    for name, value in headers:
        out += struct.pack('<H', len(name)) + name + struct.pack('<H', len(value)) + value
    return out


def published(frame_id, tier, status, head_bytes, epoch=0, slot=0, length=0, generation=0,
              crc=0, body=b'', object_key=0, object_version=0, version=VERSION):
    # tier u8, reserved u8, status u16, head_len u32, epoch u64, slot u32, len u32,
    # generation u64, crc u32, reserved u32: 56 bytes; from version 4 object_key u64 and
    # object_version u64: 72 bytes; then the head, then an inline body
    assert tier == INLINE or not body
    if tier == INLINE:
        assert (epoch, slot, generation) == (0, 0, 0)
        length, crc = len(body), zlib.crc32(body)
    fixed = struct.pack('<BBHIQIIQII', tier, 0, status, len(head_bytes), epoch, slot, length,
                        generation, crc, 0)
    if version >= 4:
        fixed += struct.pack('<QQ', object_key, object_version)
    return header(PUBLISHED, frame_id, version) + fixed + head_bytes + body


def board_request(frame_id):
    # the header alone: 16 bytes
    return header(BOARD_REQUEST, frame_id)


def board(frame_id, epoch, entry_count):
    # epoch u64, entry_count u32, reserved u32: 32 bytes
    return header(BOARD, frame_id) + struct.pack('<QII', epoch, entry_count, 0)


def refused(frame_id, code, detail):
    # code u16, reserved 6 bytes, detail u64: 32 bytes
    return header(REFUSED, frame_id) + struct.pack('<H6sQ', code, bytes(6), detail)


EPOCH = 0x9f86d081884c7d65
JSON_HEAD = head(b'application/json', [(b'x-payload-crc32', b'5d41402a'),
                                        (b'cache-control', b'no-store')])
INLINE_BODY = b'{"users":[{"id":1,"name":"Ada"}]}'

frames = {
    # The HTTP convention of transport/src/http.rs in the opaque request.
    'publish': publish(7, 123_456_789_000,
                       b'GET /users?count=1000&seed=42\r\naccept: application/json\r\n\r\n'),
    'publish_empty': publish(8, 1, b''),
    'publish_binary': publish(9, 2**64 - 1, bytes(range(256))),
    'release': release(7, 3, 26),
    'published_inline': published(9, INLINE, 200, JSON_HEAD, body=INLINE_BODY),
    'published_inline_empty': published(10, INLINE, 204, head()),
    'published_slot': published(11, SLOT, 201, head(b'text/plain; charset=utf-8'), EPOCH, 3,
                                2000, 26, 0x5d41402a),
    'published_sealed': published(12, SEALED, 200, head(), EPOCH, 5, 256_873, 27, 0x1234abcd),
    # A sealed body a slot would hold (an immutable one its producer hands out again).
    'published_sealed_small': published(14, SEALED, 200, head(), EPOCH, 6, 2000, 28, 0x0badf00d),
    # One per refusal code; detail as the code's doc says.
    'refused_too_large': refused(1, 1, 4096),
    'refused_exhausted': refused(2, 2, 0),
    'refused_peer_busy': refused(3, 3, 32),
    'refused_segment_busy': refused(4, 4, 48),
    'refused_deadline_exceeded': refused(5, 5, 0),
    'refused_internal': refused(6, 6, 0),
    'refused_request_too_large': refused(7, 7, 65536),
    'refused_handler_failed': refused(8, 8, 0),
    'refused_version': refused(9, 9, VERSION),
    'refused_no_board': refused(10, 10, 0),
    # A slot body published as version 0x2a of object 0x1122334455667788.
    'published_object': published(16, SLOT, 200, head(), EPOCH, 2, 900, 30, 0x0c0ffee0,
                                  object_key=0x1122334455667788, object_version=0x2a),
    'board_request': board_request(17),
    'board': board(17, 0x5eed5eed5eed5eed, 4096),
    # A version-1 publish (count u32, reserved u32, seed u64, deadline_ns u64): every decoder of
    # this version names it as another version, and a producer refuses it with `Version`.
    'v1_publish': header(PUBLISH, 13, version=1) + struct.pack('<IIQQ', 1000, 0, 42, 123_456_789),
    # The same small sealed answer in version 2, whose receivers refused it as a protocol error:
    # this version's decoders name it as another version.
    'v2_published_sealed_small': published(15, SEALED, 200, head(), EPOCH, 6, 2000, 28, 0x0badf00d,
                                           version=2),
    # A version-3 slot answer (56 fixed bytes, no object fields): named as another version.
    'v3_published_slot': published(18, SLOT, 200, head(), EPOCH, 2, 900, 30, 0x0c0ffee0,
                                   version=3),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, frame in frames.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(frame)
