"""A FUSE file system that never answers a read: ``python3 stuckfs.py MOUNTPOINT`` (as root)
mounts it and serves one file, ``stuck``. A process reading it waits in the kernel for an
answer that never comes; once signalled it sleeps uninterruptibly (state D: the request
was sent to this server, so the kernel waits it out) and not even SIGKILL ends it. Killing
this server aborts the connection, which ends the reader. Speaks the FUSE protocol on
/dev/fuse directly (no libfuse needed); prints ``mounted`` and ``read pending`` lines."""

import ctypes
import ctypes.util
import errno
import os
import struct
import sys

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, INIT, INTERRUPT, DESTROY, BATCH_FORGET = (
    1,
    2,
    3,
    14,
    15,
    18,
    26,
    36,
    38,
    42,
)
MS_NOSUID, MS_NODEV = 2, 4
FOPEN_DIRECT_IO = 1


def attr(node: int) -> bytes:
    if node == 1:  # the root directory
        return ATTR.pack(1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
    return ATTR.pack(2, 4096, 8, 0, 0, 0, 0, 0, 0, 0o100444, 1, 0, 0, 0, 4096, 0)


def reply(fd: int, unique: int, body: bytes = b"", error: int = 0) -> None:
    os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)


def serve(fd: int) -> None:
    while True:
        try:
            request = os.read(fd, 1 << 21)
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                continue
            return  # ENODEV: unmounted
        _, opcode, unique, node, *_rest = IN_HEADER.unpack_from(request)
        body = request[IN_HEADER.size :]
        if opcode == INIT:
            _major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            out = struct.pack(
                "<IIIIHHIIHHI7I", 7, min(minor, 31), readahead, 0, 16, 12, 65536, 1, 0, 0, 0,
                *([0] * 7),
            )  # fmt: skip
            reply(fd, unique, out)
        elif opcode == LOOKUP:
            if body.split(b"\0", 1)[0] == b"stuck":
                reply(fd, unique, struct.pack("<QQQQII", 2, 0, 60, 60, 0, 0) + attr(2))
            else:
                reply(fd, unique, error=errno.ENOENT)
        elif opcode == GETATTR:
            reply(fd, unique, struct.pack("<QII", 60, 0, 0) + attr(node))
        elif opcode == OPEN:
            reply(fd, unique, struct.pack("<QII", 1, FOPEN_DIRECT_IO, 0))
        elif opcode == READ:
            print("read pending", flush=True)  # and never answered
        elif opcode in (FORGET, BATCH_FORGET, INTERRUPT):
            pass  # no reply expected (an interrupt is ignored: the read stays pending)
        elif opcode == RELEASE:
            reply(fd, unique)
        elif opcode == DESTROY:
            reply(fd, unique)
            return
        else:
            reply(fd, unique, error=errno.ENOSYS)


def main() -> None:
    mountpoint = sys.argv[1]
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"stuckfs", mountpoint.encode(), b"fuse", MS_NOSUID | MS_NODEV, options):
        code = ctypes.get_errno()
        sys.exit(f"stuckfs: cannot mount on {mountpoint}: {os.strerror(code)}")
    print("mounted", flush=True)
    serve(fd)


if __name__ == "__main__":
    main()
