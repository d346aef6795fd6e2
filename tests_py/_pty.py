"""Reading what a child process wrote to a pseudo-terminal."""

import os


def read_all(master: int) -> bytes:
    """Everything written to the pty's other end until it is closed (the
    read fails with EIO once the child's end is gone)."""
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)
