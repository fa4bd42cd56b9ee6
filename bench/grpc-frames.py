#!/usr/bin/env python3
"""Length-prefixed gRPC frames for the gRPC benchmark (bench/grpc-bench.sh), standard library only.

h2load posts a file's bytes as the request body, so each scenario needs its request as one gRPC
message frame: 1 byte compressed flag (0), 4 bytes big-endian length, the protobuf bytes. The
messages are small and fixed, so they are encoded here by hand rather than with a protobuf
toolchain:

  flagd.evaluation.v{1,2}.ResolveBooleanRequest   1: flag_key (string), 2: context (Struct)
  hello.v1.HelloRequest                            1: name (string)

google.protobuf.Struct is `map<string, Value> fields = 1`; Value is a oneof of null_value (1),
number_value (2, double), string_value (3), bool_value (4), struct_value (5), list_value (6).
JSON numbers become doubles, as every protobuf client sends them.

The same script decodes an answer frame (to check one real call before the load), printing it as
JSON:

  grpc-frames.py resolve-boolean FLAG_KEY CONTEXT_JSON OUT   # request frame
  grpc-frames.py hello NAME OUT                              # request frame
  grpc-frames.py decode (resolve-boolean|hello) IN           # answer frame → JSON on stdout
"""

import json
import struct
import sys

# ------------------------------------------------------------------------------------- encoding


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def string_field(field: int, s: str) -> bytes:
    return length_delimited(field, s.encode())


def value(v) -> bytes:
    if v is None:
        return tag(1, 0) + varint(0)
    if isinstance(v, bool):
        return tag(4, 0) + varint(int(v))
    if isinstance(v, (int, float)):
        return tag(2, 1) + struct.pack("<d", float(v))
    if isinstance(v, str):
        return string_field(3, v)
    if isinstance(v, dict):
        return length_delimited(5, struct_message(v))
    if isinstance(v, list):
        return length_delimited(6, b"".join(length_delimited(1, value(x)) for x in v))
    raise TypeError(f"not a JSON value: {v!r}")


def struct_message(obj: dict) -> bytes:
    return b"".join(
        length_delimited(1, string_field(1, k) + length_delimited(2, value(v)))
        for k, v in obj.items()
    )


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


# ------------------------------------------------------------------------------------- decoding


def fields(buf: bytes):
    """Yields (field number, wire type, value) of one message: ints for varint/fixed, bytes for
    length-delimited."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            v, i = read_varint(buf, i)
        elif wire_type == 1:
            v, i = buf[i : i + 8], i + 8
        elif wire_type == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wire_type == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield field, wire_type, v


def read_varint(buf: bytes, i: int):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_value(buf: bytes):
    out = None
    for f, _, v in fields(buf):
        if f == 1:
            out = None
        elif f == 2:
            out = struct.unpack("<d", v)[0]
        elif f == 3:
            out = v.decode()
        elif f == 4:
            out = bool(v)
        elif f == 5:
            out = decode_struct(v)
        elif f == 6:
            out = [decode_value(x) for g, _, x in fields(v) if g == 1]
    return out


def decode_struct(buf: bytes) -> dict:
    out = {}
    for f, _, entry in fields(buf):
        if f != 1:
            continue
        k, val = "", None
        for g, _, v in fields(entry):
            if g == 1:
                k = v.decode()
            elif g == 2:
                val = decode_value(v)
        out[k] = val
    return out


def decode_resolve_boolean(buf: bytes) -> dict:
    out = {}
    for f, _, v in fields(buf):
        if f == 1:
            out["value"] = bool(v)
        elif f == 2:
            out["reason"] = v.decode()
        elif f == 3:
            out["variant"] = v.decode()
        elif f == 4:
            out["metadata"] = decode_struct(v)
    return out


def decode_hello(buf: bytes) -> dict:
    return {"message": v.decode() for f, _, v in fields(buf) if f == 1}


def unframe(data: bytes) -> bytes:
    if len(data) < 5:
        raise ValueError(f"no gRPC frame ({len(data)} bytes)")
    if data[0] != 0:
        raise ValueError("compressed frame")
    (n,) = struct.unpack(">I", data[1:5])
    if len(data) != 5 + n:
        raise ValueError(f"frame says {n} bytes, body has {len(data) - 5}")
    return data[5:]


# ------------------------------------------------------------------------------------- main


def main(argv):
    if len(argv) == 5 and argv[1] == "resolve-boolean":
        key, ctx, out = argv[2], json.loads(argv[3]), argv[4]
        if not isinstance(ctx, dict):
            raise SystemExit("the context must be a JSON object")
        message = string_field(1, key) + length_delimited(2, struct_message(ctx))
    elif len(argv) == 4 and argv[1] == "hello":
        message, out = string_field(1, argv[2]), argv[3]
    elif len(argv) == 4 and argv[1] == "decode":
        with open(argv[3], "rb") as f:
            body = unframe(f.read())
        decoders = {"resolve-boolean": decode_resolve_boolean, "hello": decode_hello}
        if argv[2] not in decoders:
            raise SystemExit(f"unknown message {argv[2]!r}")
        print(json.dumps(decoders[argv[2]](body), sort_keys=True))
        return
    else:
        raise SystemExit(__doc__)
    with open(out, "wb") as f:
        f.write(frame(message))


if __name__ == "__main__":
    main(sys.argv)
