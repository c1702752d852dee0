"""Reads a log folder with the real `tensorboard` package and prints what it found as JSON.

Usage: read_with_tensorboard.py LOGDIR
Every float is printed as the integer of its IEEE-754 double bits, so the test compares
exact values whatever its JSON parser's rounding.
Run by tensorboard_reads.rs with the venv of scripts/setup-tensorboard. Per run (sub-folder),
through EventAccumulator (size_guidance 0: keep every event): scalars, histograms, images
(decoded by Pillow), text tensors and the hparams plugin's three summaries, parsed by the
plugin's own metadata module. Across runs: the HParams tab's session groups, from the
plugin's ListSessionGroups handler over the data provider the TensorBoard server uses.
"""

import io
import json
import os
import struct
import sys

from PIL import Image
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups
from tensorboard.plugins.hparams import metadata as hp
from tensorboard.util import tensor_util

KEEP_ALL = {
    ea.COMPRESSED_HISTOGRAMS: 0,
    ea.IMAGES: 0,
    ea.AUDIO: 0,
    ea.SCALARS: 0,
    ea.HISTOGRAMS: 0,
    ea.TENSORS: 0,
}


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def proto_value(v):
    kind = v.WhichOneof("kind")
    value = getattr(v, kind)
    return {kind: bits(value) if kind == "number_value" else value}


def hparams(acc):
    content = acc.PluginTagToContent(hp.PLUGIN_NAME)
    out = {"tags": sorted(content)}
    if hp.EXPERIMENT_TAG in content:
        exp = hp.parse_experiment_plugin_data(content[hp.EXPERIMENT_TAG])
        out["experiment"] = {
            "hparams": [[h.name, h.type] for h in exp.hparam_infos],
            "metrics": [[m.name.group, m.name.tag] for m in exp.metric_infos],
        }
    if hp.SESSION_START_INFO_TAG in content:
        start = hp.parse_session_start_info_plugin_data(content[hp.SESSION_START_INFO_TAG])
        out["session_start"] = {k: proto_value(v) for k, v in sorted(start.hparams.items())}
    if hp.SESSION_END_INFO_TAG in content:
        end = hp.parse_session_end_info_plugin_data(content[hp.SESSION_END_INFO_TAG])
        out["session_end"] = {"status": end.status}
    return out


def read_run(path):
    acc = ea.EventAccumulator(path, size_guidance=KEEP_ALL)
    acc.Reload()
    tags = acc.Tags()
    run = {"scalars": {}, "histograms": {}, "images": {}, "text": {}}
    for tag in tags["scalars"]:
        run["scalars"][tag] = [[e.step, bits(e.value)] for e in acc.Scalars(tag)]
    for tag in tags["histograms"]:
        run["histograms"][tag] = [
            {
                "step": e.step,
                "min": bits(e.histogram_value.min),
                "max": bits(e.histogram_value.max),
                "num": bits(e.histogram_value.num),
                "sum": bits(e.histogram_value.sum),
                "sum_squares": bits(e.histogram_value.sum_squares),
                "bucket_limit": [bits(x) for x in e.histogram_value.bucket_limit],
                "bucket": [bits(x) for x in e.histogram_value.bucket],
            }
            for e in acc.Histograms(tag)
        ]
    for tag in tags["images"]:
        run["images"][tag] = []
        for e in acc.Images(tag):
            img = Image.open(io.BytesIO(e.encoded_image_string))
            run["images"][tag].append(
                {
                    "step": e.step,
                    "width": e.width,
                    "height": e.height,
                    "format": img.format,
                    "mode": img.mode,
                    "rgb": [c for px in img.getdata() for c in px],
                }
            )
    for tag in tags["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        if plugin != "text":
            continue
        run["text"][tag] = [
            [e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode("utf-8")]
            for e in acc.Tensors(tag)
        ]
    run["hparams"] = hparams(acc)
    return run


def session_groups(logdir):
    """The HParams tab's table: the plugin's ListSessionGroups over the data provider the
    TensorBoard server builds (plugin event multiplexer, simple_value migrated to tensors)."""
    mux = pem.EventMultiplexer(size_guidance=KEEP_ALL)
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    tb = base_plugin.TBContext(
        logdir=logdir,
        multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, logdir),
    )
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=1000,
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
    )
    handler = list_session_groups.Handler(
        context.RequestContext(), backend_context.Context(tb), "", request
    )
    return [
        {
            "name": g.name,
            "hparams": {k: proto_value(v) for k, v in sorted(g.hparams.items())},
            "metrics": [
                [m.name.group, m.name.tag, m.training_step, bits(m.value)]
                for m in g.metric_values
            ],
            "sessions": [[s.name, s.status] for s in g.sessions],
        }
        for g in handler.run().session_groups
    ]


def main():
    logdir = sys.argv[1]
    runs = {
        name: read_run(os.path.join(logdir, name))
        for name in sorted(os.listdir(logdir))
        if os.path.isdir(os.path.join(logdir, name))
    }
    json.dump({"runs": runs, "session_groups": session_groups(logdir)}, sys.stdout)


if __name__ == "__main__":
    main()
