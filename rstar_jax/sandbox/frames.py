"""The messages between a pool and its zygotes: length-prefixed pickles over a unix socket.

Each frame is FRAME_HEADER (the payload's length, 4 bytes big-endian) then a pickle of one
tuple. Zygote to pool: `("ready", pid, interpreter_dirs)` once started, or `("error", text)` if it could not
start; then `("result", job_id, status, stdout, stderr, exit_code, wall_time_s)` per job
(stdout/stderr bytes, exit_code None unless the program exited on its own). Pool to zygote:
`("run", job_id, source, stdin)` (stdin bytes). Both ends are processes of one service, so
pickle carries nothing untrusted: snippets never write to this socket.
"""
import pickle
import struct

FRAME_HEADER = struct.Struct(">I")


def encode_frame(message) -> bytes:
  """A length-prefixed pickle of `message` (both directions of the zygote socket)."""
  payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
  return FRAME_HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes):
  """The message of one frame's payload (the bytes after its FRAME_HEADER)."""
  return pickle.loads(payload)


class FrameDecoder:
  """Splits a byte stream into the messages of `encode_frame`."""

  def __init__(self):
    self._buffer = bytearray()

  def feed(self, data: bytes) -> list:
    """Appends `data`; returns the messages completed by it, in order."""
    self._buffer += data
    messages = []
    while len(self._buffer) >= FRAME_HEADER.size:
      (size,) = FRAME_HEADER.unpack_from(self._buffer)
      if len(self._buffer) < FRAME_HEADER.size + size:
        break
      messages.append(decode_payload(self._buffer[FRAME_HEADER.size:FRAME_HEADER.size + size]))
      del self._buffer[:FRAME_HEADER.size + size]
    return messages
