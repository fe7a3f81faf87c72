"""Reads an event file with TensorBoard's own readers and prints what they found, as JSON.

The fixture `diffris-experiments/tests/fixtures/tfevents/events.out.tfevents.fixture` is written
by diffris' event writer (`records::tfevents`, the ignored test `write_fixture`); this script's
output on it is committed beside it as `read_by_tensorboard.json`, and the Rust test
`tensorboard_reads_what_this_writer_writes` checks both. Two readers:

  events       TensorBoard's `EventFileLoader` (its TFRecord reader, which checks the length
               and data checksums): every event in file order, with its wall time, step and
               content (file version, session-log START, or the scalar's tag and value).
  accumulator  TensorBoard's `EventAccumulator` (what the scalar dashboard reads), loaded from
               the file's folder: each scalar tag's (step, value) pairs after its purge rules.

    python3 -m venv /tmp/tb && /tmp/tb/bin/pip install tensorboard
    /tmp/tb/bin/python tools/read_tfevents.py FILE > FILE_DIR/read_by_tensorboard.json

Dev-only (tensorboard from PyPI; nothing else).
"""

import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util


def scalar_value(value):
    # TensorBoard's loader turns `simple_value` into a rank-0 tensor (its data_compat step).
    if value.HasField("tensor"):
        return float(tensor_util.make_ndarray(value.tensor).item())
    return float(value.simple_value)


def main(path):
    events = []
    for event in event_file_loader.EventFileLoader(path).Load():
        entry = {"wall_time": event.wall_time, "step": event.step}
        kind = event.WhichOneof("what")
        if kind == "file_version":
            entry["file_version"] = event.file_version
        elif kind == "session_log":
            assert event.session_log.status == event_pb2.SessionLog.START
            entry["session_start_step"] = event.step
        elif kind == "summary":
            (value,) = event.summary.value
            entry["tag"] = value.tag
            entry["value"] = scalar_value(value)
        events.append(entry)
    acc = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [[s.step, s.value] for s in acc.Scalars(t)] for t in tags["scalars"]}
    # Newer TensorBoards keep simple values as tensors in the accumulator.
    for t in tags.get("tensors", []):
        scalars[t] = [[s.step, float(tensor_util.make_ndarray(s.tensor_proto).item())]
                      for s in acc.Tensors(t)]
    json.dump({"events": events, "accumulator": scalars}, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
