"""Small Parquet files for the Hub-dataset tests, written with Python's standard library only.

There is no pyarrow here, so this is a minimal Parquet writer following the format spec
(github.com/apache/parquet-format, parquet.thrift): Thrift compact protocol for the footer and page
headers, data pages v1 with PLAIN values and RLE levels, one page per column chunk. It writes
uncompressed, GZIP (zlib) and SNAPPY pages; the Snappy stream is literal-only (valid Snappy that
never back-references, so any decoder reads it). Columns are REQUIRED, except `list<struct>`
conversations (repetition levels) to read as real datasets store `messages`.

    python3 -B tests/reference/parquet_fixtures.py

writes, under tests/fixtures/datasets/:
  stories-qa/               a dataset repo in the Hub's layout (README.md + data/*.parquet):
    data/train-00000-of-00002.parquet   rows 1-8, two row groups of 4, uncompressed
    data/train-00001-of-00002.parquet   rows 9-12, one row group, SNAPPY
    data/test-00000-of-00001.parquet    3 rows, GZIP
  conversations.parquet     10 rows in row groups of 3, 3, 3, 1: id (INT64), conversation
                            (list<struct<role, content>>), label (BOOLEAN), SNAPPY
  expected.json             every file's rows as a reader must return them, in order

The output is deterministic: running it twice gives identical files.
"""

import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'datasets')

# parquet.thrift enums
BOOLEAN, INT64, BYTE_ARRAY = 0, 2, 6
REQUIRED, REPEATED = 0, 2
UTF8, LIST = 0, 3
PLAIN, RLE = 0, 3
UNCOMPRESSED, SNAPPY, GZIP = 0, 1, 2
DATA_PAGE = 0

# Thrift compact protocol type ids
T_TRUE, T_FALSE, T_I32, T_I64, T_BINARY, T_LIST, T_STRUCT = 1, 2, 5, 6, 8, 9, 12


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n):
    return (n << 1) ^ (n >> 63)


class Struct:
    """A Thrift struct in the compact protocol: fields in increasing id order, then a stop byte."""

    def __init__(self):
        self.out = bytearray()
        self.last = 0

    def header(self, fid, ttype):
        delta = fid - self.last
        assert 0 < delta <= 15
        self.out.append((delta << 4) | ttype)
        self.last = fid

    def i32(self, fid, v):
        self.header(fid, T_I32)
        self.out += varint(zigzag(v))
        return self

    def i64(self, fid, v):
        self.header(fid, T_I64)
        self.out += varint(zigzag(v))
        return self

    def binary(self, fid, b):
        self.header(fid, T_BINARY)
        self.out += varint(len(b)) + b
        return self

    def struct(self, fid, s):
        self.header(fid, T_STRUCT)
        self.out += s.done()
        return self

    def list(self, fid, etype, items):
        self.header(fid, T_LIST)
        n = len(items)
        self.out.append((n << 4) | etype if n < 15 else 0xF0 | etype)
        if n >= 15:
            self.out += varint(n)
        for item in items:
            if etype == T_I32:
                self.out += varint(zigzag(item))
            elif etype == T_BINARY:
                self.out += varint(len(item)) + item
            else:
                self.out += item.done()
        return self

    def done(self):
        return bytes(self.out) + b'\x00'


def snappy_literal(data):
    """Snappy's framing-free format: the length as a varint, then literal chunks only."""
    out = bytearray(varint(len(data)))
    for at in range(0, len(data), 65536):
        chunk = data[at:at + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack('<H', n)
        out += chunk
    return bytes(out)


def compress(codec, data):
    if codec == UNCOMPRESSED:
        return data
    if codec == GZIP:
        return gzip.compress(data, mtime=0)
    return snappy_literal(data)


def rle_levels(levels, bit_width=1):
    """The RLE/bit-packed hybrid as RLE runs only, prefixed by its byte length (data page v1)."""
    body = bytearray()
    i = 0
    while i < len(levels):
        j = i
        while j < len(levels) and levels[j] == levels[i]:
            j += 1
        body += varint((j - i) << 1) + bytes([levels[i]]) * ((bit_width + 7) // 8)
        i = j
    return struct.pack('<I', len(body)) + bytes(body)


def plain(ptype, values):
    if ptype == BYTE_ARRAY:
        return b''.join(struct.pack('<I', len(v.encode())) + v.encode() for v in values)
    if ptype == INT64:
        return b''.join(struct.pack('<q', v) for v in values)
    bits = bytearray((len(values) + 7) // 8)
    for k, v in enumerate(values):
        if v:
            bits[k // 8] |= 1 << (k % 8)
    return bytes(bits)


class Column:
    """A leaf column: its path, physical type, and how to get its levels and values from rows."""

    def __init__(self, path, ptype, get, repeated=False):
        self.path, self.ptype, self.get, self.repeated = path, ptype, get, repeated

    def page_body(self, rows):
        if not self.repeated:
            values = [self.get(r) for r in rows]
            return len(values), plain(self.ptype, values)
        # list<struct> of REQUIRED fields: max repetition and definition level 1.
        reps, defs, values = [], [], []
        for r in rows:
            items = self.get(r)
            if not items:
                reps.append(0)
                defs.append(0)
            for k, item in enumerate(items):
                reps.append(0 if k == 0 else 1)
                defs.append(1)
                values.append(item)
        return len(reps), rle_levels(reps) + rle_levels(defs) + plain(self.ptype, values)


def write_parquet(path, schema, columns, rows, group_sizes, codec):
    assert sum(group_sizes) == len(rows)
    out = bytearray(b'PAR1')
    groups = []
    start = 0
    for size in group_sizes:
        part = rows[start:start + size]
        start += size
        chunks = []
        total = 0
        for col in columns:
            num_values, body = col.page_body(part)
            packed = compress(codec, body)
            header = (Struct().i32(1, DATA_PAGE).i32(2, len(body)).i32(3, len(packed))
                      .struct(5, Struct().i32(1, num_values).i32(2, PLAIN).i32(3, RLE).i32(4, RLE))).done()
            offset = len(out)
            out += header + packed
            meta = (Struct().i32(1, col.ptype).list(2, T_I32, [PLAIN, RLE])
                    .list(3, T_BINARY, [p.encode() for p in col.path]).i32(4, codec)
                    .i64(5, num_values).i64(6, len(header) + len(body)).i64(7, len(header) + len(packed))
                    .i64(9, offset))
            chunks.append(Struct().i64(2, offset).struct(3, meta))
            total += len(header) + len(body)
        groups.append(Struct().list(1, T_STRUCT, chunks).i64(2, total).i64(3, size))
    footer = (Struct().i32(1, 1).list(2, T_STRUCT, schema).i64(3, len(rows)).list(4, T_STRUCT, groups)
              .binary(6, b'finetune-studio tests/reference/parquet_fixtures.py')).done()
    out += footer + struct.pack('<I', len(footer)) + b'PAR1'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(out)


def element(name, ptype=None, repetition=None, children=None, converted=None):
    s = Struct()
    if ptype is not None:
        s.i32(1, ptype)
    if repetition is not None:
        s.i32(3, repetition)
    s.binary(4, name.encode())
    if children is not None:
        s.i32(5, children)
    if converted is not None:
        s.i32(6, converted)
    return s


# TinyStories-like sentences (written for these tests), which stories260K already half knows.
STORIES = [
    ('Lily in the park', 'Once upon a time, there was a little', ' girl named Lily. She loved to play outside in the park.'),
    ('The red ball', 'One day, a boy named Tom found a', ' big red ball. He was very happy and played with it all day.'),
    ('A cake for dinner', 'Lily and her mom went to the', ' store. They bought apples and a cake for dinner.'),
    ('The cat and the bird', 'The cat saw a bird in the', ' tree. The cat wanted to play, but the bird flew away.'),
    ('Spot', 'Tim had a small', ' dog named Spot. Spot liked to run and jump in the grass.'),
    ('The bear', 'Once upon a time, there was a big', ' bear who lived in the forest. He liked to eat honey.'),
    ('A hug', 'Sue wanted to help her', ' dad. She gave him a hug and he smiled at her.'),
    ('The pool', 'The sun was hot, so Ben went to the', ' pool. He swam with his friends and had fun.'),
    ('A shiny rock', 'Mia found a shiny', ' rock on the beach. She put it in her pocket and ran home.'),
    ('Try again', 'The little bird was', ' sad because it could not fly. Its mom helped it try again.'),
    ('The sandcastle', 'Max and Sam built a', ' sandcastle. A big wave came and they laughed.'),
    ('Flowers', 'Anna liked to draw', ' pictures of flowers. Her mom put them on the wall.'),
]
TEST_STORIES = [
    ('The kite', 'Ben had a red', ' kite. He ran fast and the kite flew high.'),
    ('Rain', 'It was raining, so Lily', ' stayed inside and read a book with her cat.'),
    ('The frog', 'A green frog sat on a', ' log. It jumped into the pond with a splash.'),
]

QA_SCHEMA = [
    element('schema', children=4),
    element('id', INT64, REQUIRED),
    element('title', BYTE_ARRAY, REQUIRED, converted=UTF8),
    element('question', BYTE_ARRAY, REQUIRED, converted=UTF8),
    element('answer', BYTE_ARRAY, REQUIRED, converted=UTF8),
]
QA_COLUMNS = [
    Column(['id'], INT64, lambda r: r['id']),
    Column(['title'], BYTE_ARRAY, lambda r: r['title']),
    Column(['question'], BYTE_ARRAY, lambda r: r['question']),
    Column(['answer'], BYTE_ARRAY, lambda r: r['answer']),
]

CHAT_SCHEMA = [
    element('schema', children=3),
    element('id', INT64, REQUIRED),
    element('conversation', repetition=REQUIRED, children=1, converted=LIST),
    element('list', repetition=REPEATED, children=1),
    element('element', repetition=REQUIRED, children=2),
    element('role', BYTE_ARRAY, REQUIRED, converted=UTF8),
    element('content', BYTE_ARRAY, REQUIRED, converted=UTF8),
    element('label', BOOLEAN, REQUIRED),
]
CHAT_COLUMNS = [
    Column(['id'], INT64, lambda r: r['id']),
    Column(['conversation', 'list', 'element', 'role'], BYTE_ARRAY, lambda r: [m['role'] for m in r['conversation']], repeated=True),
    Column(['conversation', 'list', 'element', 'content'], BYTE_ARRAY, lambda r: [m['content'] for m in r['conversation']], repeated=True),
    Column(['label'], BOOLEAN, lambda r: r['label']),
]


def qa_rows(stories, first_id):
    return [{'id': first_id + k, 'title': t, 'question': q, 'answer': a} for k, (t, q, a) in enumerate(stories)]


def chat_rows():
    rows = []
    for k in range(10):
        _, q, a = STORIES[k]
        turns = [{'role': 'user', 'content': f'Finish the story: {q}'}, {'role': 'assistant', 'content': a.strip()}]
        if k % 3 == 2:
            # Some rows are longer, so rows of one row group hold different numbers of messages.
            turns += [{'role': 'user', 'content': 'And then?'}, {'role': 'assistant', 'content': 'They all went home happy.'}]
        rows.append({'id': 100 + k, 'conversation': turns, 'label': k % 2 == 0})
    return rows


def main():
    repo = os.path.join(ROOT, 'stories-qa')
    train = qa_rows(STORIES, 1)
    test = qa_rows(TEST_STORIES, 101)
    files = {
        'stories-qa/data/train-00000-of-00002.parquet': (QA_SCHEMA, QA_COLUMNS, train[:8], [4, 4], UNCOMPRESSED),
        'stories-qa/data/train-00001-of-00002.parquet': (QA_SCHEMA, QA_COLUMNS, train[8:], [4], SNAPPY),
        'stories-qa/data/test-00000-of-00001.parquet': (QA_SCHEMA, QA_COLUMNS, test, [3], GZIP),
        'conversations.parquet': (CHAT_SCHEMA, CHAT_COLUMNS, chat_rows(), [3, 3, 3, 1], SNAPPY),
    }
    expected = {}
    for name, (schema, columns, rows, groups, codec) in files.items():
        write_parquet(os.path.join(ROOT, name), schema, columns, rows, groups, codec)
        expected[name] = {'row_groups': groups, 'rows': rows}
    with open(os.path.join(repo, 'README.md'), 'w') as f:
        f.write(
            '---\nlicense: mit\n---\n# stories-qa\n\n'
            'Fifteen TinyStories-like sentences split into a question (the start) and an answer (the end),\n'
            'written for the finetune-studio tests by tests/reference/parquet_fixtures.py. The train split\n'
            'is two Parquet shards (the first in two row groups); the test split one.\n'
        )
    with open(os.path.join(ROOT, 'expected.json'), 'w') as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write('\n')


if __name__ == '__main__':
    main()
