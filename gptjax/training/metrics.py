"""Where metrics go: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard event files in
WORKDIR/tensorboard, with config.logging.wandb a Weights & Biases run, and the console's progress
bar.

The W&B run's id is stored in WORKDIR/wandb_run_id when the run first starts; a resumed run
continues that W&B run (wandb.init(id=..., resume='allow')), so one workdir is one W&B run however
often it was stopped. Its config is the run's config; W&B's own settings (WANDB_MODE=offline,
WANDB_API_KEY, WANDB_DIR) come from the environment, and its files go in WORKDIR/wandb unless
WANDB_DIR says otherwise.
"""

import json
import math
import os
import re
import secrets
import socket
import string
import struct
import sys
import time

import ml_collections

from gptjax.data.atomic import write_atomic
from gptjax.errors import UserError

RUN_ID_FILE = 'wandb_run_id'
_RUN_ID = re.compile(r'[A-Za-z0-9._-]{1,128}')  # no /, \, #, ?, % or : (W&B refuses them)


class MetricsWriter:
  """Writes each row to every sink of the run (metrics.jsonl, TensorBoard, and W&B where
  config.logging.wandb), from process 0 only; other processes get a writer that does nothing."""

  def __init__(
    self, workdir: str, enabled: bool = True, config: ml_collections.ConfigDict | None = None
  ):
    self._sinks = []
    if not enabled:
      return
    try:
      self._sinks.append(_Jsonl(workdir))
      self._sinks.append(_TensorBoard(workdir))
      if config is not None and 'logging' in config and config.logging.wandb:
        self._sinks.append(_WandB(workdir, config))
    except BaseException:
      self.close()
      raise

  def write(self, step: int, metrics: dict[str, float]) -> None:
    for sink in self._sinks:
      sink.write(step, metrics)

  def close(self) -> None:
    sinks, self._sinks = self._sinks, []
    for sink in sinks:
      sink.close()


class _Jsonl:
  def __init__(self, workdir: str):
    path = os.path.join(workdir, 'metrics.jsonl')
    unfinished = os.path.exists(path) and os.path.getsize(path) and not _ends_a_line(path)
    self._file = open(path, 'a')
    if unfinished:  # a run killed mid-write left half a line: end it, so ours stand alone
      self._file.write('\n')

  def write(self, step: int, metrics: dict[str, float]) -> None:
    self._file.write(json.dumps({'step': step, **metrics}) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class _TensorBoard:
  """Scalars as a TensorBoard event file, WORKDIR/tensorboard/events.out.tfevents.*: Event protos
  in TFRecord framing, encoded here. tensorboardX would write the same, but importing any of it
  imports torch wherever torch is installed, seconds at the start of every command."""

  def __init__(self, workdir: str):
    logdir = os.path.join(workdir, 'tensorboard')
    os.makedirs(logdir, exist_ok=True)
    # One file per process that opens the run (a resumed run adds one); the reader merges them.
    name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}'
    self._file = open(os.path.join(logdir, name), 'ab')
    self._write_event(_string(3, 'brain.Event:2'))  # file_version, first in every event file
    self._file.flush()

  def write(self, step: int, metrics: dict[str, float]) -> None:
    values = b''.join(
      _message(1, _string(1, name) + _float32(2, value)) for name, value in metrics.items()
    )  # Summary.value: tag and simple_value
    self._write_event(_varint_field(2, step) + _message(5, values))  # Event.step, Event.summary
    self._file.flush()

  def close(self) -> None:
    self._file.close()

  def _write_event(self, fields: bytes) -> None:
    event = struct.pack('<Bd', 1 << 3 | 1, time.time()) + fields  # Event.wall_time, a double
    length = struct.pack('<Q', len(event))  # a TFRecord: length, its CRC, the data, its CRC
    self._file.write(length + _masked_crc(length) + event + _masked_crc(event))


# Protobuf's wire format, for the fields above: a key (field number, wire type), then the value.
def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # a negative int64 as its two's complement
  out = bytearray()
  while n > 0x7F:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _varint_field(field: int, n: int) -> bytes:
  return _varint(field << 3) + _varint(int(n))


def _message(field: int, data: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
  return _message(field, text.encode('utf-8'))


def _float32(field: int, value: float) -> bytes:
  value = float(value)
  if math.isfinite(value) and abs(value) > 3.4028234663852886e38:  # past float32: inf, as a cast
    value = math.copysign(math.inf, value)
  return _varint(field << 3 | 5) + struct.pack('<f', value)


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = crc >> 1 ^ 0x82F63B78 if crc & 1 else crc >> 1  # CRC-32C (Castagnoli), reflected
    table.append(crc)
  return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> bytes:
  """TFRecord's masked CRC-32C of data, 4 bytes little-endian."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ crc >> 8
  crc ^= 0xFFFFFFFF
  return struct.pack('<I', ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF)


class _WandB:
  """The workdir's W&B run, started or resumed. Several can be open in one process (the runs of
  a stack, gptjax/training/stacked.py), each its own W&B run."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    import wandb  # pylint: disable=import-outside-toplevel  (optional; validate checked it)

    log = config.logging
    try:
      self._run = wandb.init(
        project=log.wandb_project or None,
        entity=log.wandb_entity or None,
        name=log.wandb_name or os.path.basename(os.path.abspath(workdir)),
        group=log.wandb_group or None,
        tags=[tag.strip() for tag in log.wandb_tags.split(',') if tag.strip()] or None,
        config=json.loads(config.to_json()),
        allow_val_change=True,  # a resumed run may change the resumable fields (train.steps)
        id=wandb_run_id(workdir),
        resume='allow',
        dir=os.environ.get('WANDB_DIR') or workdir,  # read now: wandb reads it once a process
        reinit='create_new',  # a run of its own, beside any other open in this process
      )
    except wandb.errors.Error as e:  # not logged in, no network, a bad entity or project
      raise UserError(
        f'W&B refused the run of {workdir}: {e} (logging.wandb=True: log in with `wandb login`, '
        'or log offline with WANDB_MODE=offline and `wandb sync` later)'
      ) from None

  def write(self, step: int, metrics: dict[str, float]) -> None:
    self._run.log(dict(metrics), step=step)

  def close(self) -> None:
    # Closed while an exception propagates (a refused config, a non-finite step, SIGTERM): the
    # W&B run is marked failed until it resumes.
    self._run.finish(exit_code=0 if sys.exc_info()[0] is None else 1)


def wandb_run_id(workdir: str) -> str:
  """The W&B run id of the workdir's run, from WORKDIR/wandb_run_id, or a new one stored there."""
  path = os.path.join(workdir, RUN_ID_FILE)
  if not os.path.exists(path):
    run_id = ''.join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    write_atomic(path, run_id + '\n')
    return run_id
  with open(path, encoding='utf-8', errors='replace') as f:
    run_id = f.read().strip()
  if not _RUN_ID.fullmatch(run_id):
    raise UserError(
      f'{path} does not hold a W&B run id (letters, digits, ., _ or -): put the original back, '
      'or delete it to log this run to a new W&B run'
    )
  return run_id


def read_metrics(workdir: str, last_step: int | None = None) -> list[dict]:
  """WORKDIR/metrics.jsonl (empty if there is none) in step order, up to last_step. A run resumed
  from a checkpoint logs the steps after it again; the later line of a step wins."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  latest = {}
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, 1):
      try:
        row = json.loads(line)
      except ValueError:  # half a line, written as the run was killed: the resumed run logs again
        print(f'warning: {path}, line {number}: not a whole JSON line; skipped', file=sys.stderr)
        continue
      if not isinstance(row, dict) or not isinstance(row.get('step'), int):
        continue
      if last_step is None or row['step'] <= last_step:
        latest[(row['step'], 'eval_loss' in row)] = row  # train and eval lines share steps
  return [latest[key] for key in sorted(latest)]


def _ends_a_line(path: str) -> bool:
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'
