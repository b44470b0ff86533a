#!/usr/bin/env python3
# Usage: python3 fuzz/make_slot_ops_seeds.py fuzz/seeds/slot_ops
# Writes named slot_ops inputs: runs written as operations, encoded the way derive(Arbitrary)
# decodes `Vec<Op>` from the rest of the input (arbitrary 1.x): per operation a byte with the low
# bit set ("one more"), the variant as a u32 that (u32 * variant count) >> 32 maps to its index,
# then the fields in order, little-endian. VARIANTS must list transport/src/testing/slot_ops.rs's
# `Op` in order; transport/tests/fuzz_replay.rs checks that each seed decodes to the run meant.
import os, struct, sys

VARIANTS = [
    ('Claim', 'BH'), ('Write', 'BBB'), ('Publish', 'B'), ('Abandon', 'B'), ('Acquire', 'BB'),
    ('AcquireForged', 'BBBB'), ('CopyOut', 'B'), ('CopyInto', 'B'), ('DropReader', 'B'),
    ('Crash', 'B'), ('Restart', 'B'), ('Advance', 'H'), ('Reap', ''), ('FlipPayload', 'BHB'),
    ('FlipDescriptor', 'BBB'), ('PublishSealed', 'BHB'), ('RedeemSealed', 'BBB'),
    ('CheckSealedRead', 'B'), ('LoseDescriptor', 'B'), ('WithdrawSealed', 'B'),
]
INDEX = {name: (i, fields) for i, (name, fields) in enumerate(VARIANTS)}

def op(name, *values):
    index, fields = INDEX[name]
    tag = -(-(index << 32) // len(VARIANTS))  # the smallest u32 that maps to `index`
    return b'\x01' + struct.pack('<I' + fields, tag, *values)

seeds = {
    # With room for 1536 sealed bytes (MAX_PAYLOAD 1024, slots of 256): the room runs out, a
    # length a slot holds and one above the largest are refused, a ticket redeemed with another
    # ticket's descriptor is refused and spent, a withdrawal makes room, a lost descriptor's
    # ticket is reclaimed after its publisher crashed, and held bytes outlive their tickets.
    'sealed-room-runs-out': [
        op('PublishSealed', 0, 1000, 1),   # ticket 0: 1000 bytes in flight
        op('PublishSealed', 0, 700, 2),    # 1700 > 1536: BytesExhausted
        op('PublishSealed', 0, 500, 3),    # ticket 1: 1500
        op('PublishSealed', 0, 1100, 4),   # above the largest: TooLarge
        op('PublishSealed', 0, 100, 5),    # a slot holds it: FitsInSlot
        op('RedeemSealed', 1, 1, 0),       # ticket 1 with ticket 0's descriptor: refused, spent
        op('PublishSealed', 0, 900, 6),    # 1000 + 900 > 1536: BytesExhausted
        op('WithdrawSealed', 0),           # ticket 0 withdrawn: nothing in flight
        op('PublishSealed', 0, 900, 6),    # ticket 2
        op('RedeemSealed', 2, 2, 1),       # redeemed, bytes held
        op('PublishSealed', 1, 600, 7),    # ticket 3, by process 1
        op('LoseDescriptor', 3),
        op('Crash', 1),
        op('Advance', 5000),
        op('Reap'),                        # ticket 3's TTL is over: reclaimed
        op('Claim', 2, 50),                # a slot publication, maybe in a ticket's old slot
        op('Write', 0, 50, 9),
        op('Publish', 0),
        op('CheckSealedRead', 0),
    ],
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, ops in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(b''.join(ops))
