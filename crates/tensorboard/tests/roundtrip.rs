//! Writer → our reader: every summary kind comes back with its tags, steps and values, the
//! bytes are byte-exact against TensorBoard's own test vectors, and a corrupted or cut file
//! fails at the right record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use mmerge_tensorboard::proto::{
    DT_FLOAT, Event, HParamsPluginData, PluginData, Summary, SummaryMetadata, SummaryValue,
    TensorProto, TensorShapeProto, event::What, hparams_plugin_data::Data, proto_value::Kind,
    summary_value::Value,
};
use mmerge_tensorboard::record::frame_into;
use mmerge_tensorboard::{Clock, TensorboardError, decode_events, histogram, read_events};
use proptest::prelude::*;
use prost::Message;

const T: f64 = 1_700_000_000.25;

fn values_of(event: &Event) -> &[SummaryValue] {
    match &event.what {
        Some(What::Summary(s)) => &s.value,
        other => panic!("not a summary: {other:?}"),
    }
}

/// (record offset, record length) of every record, from the framing alone.
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        spans.push((at, 16 + len));
        at += 16 + len;
    }
    spans
}

#[test]
fn every_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path(), 1, Clock::Fixed(T)).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("events.out.tfevents.1700000000."),
        "{name}"
    );
    assert!(
        name.contains(&format!(".{}.", std::process::id())),
        "{name}"
    );

    let events = read_events(&path).unwrap();
    // file version, 5 scalars, histogram, image, text, score, 3 hparams
    assert_eq!(events.len(), 13);
    assert_eq!(
        events[0].what,
        Some(What::FileVersion("brain.Event:2".into()))
    );
    assert!(events.iter().all(|e| e.wall_time == T));
    for e in &events[1..] {
        assert_eq!(values_of(e).len(), 1);
    }
    let v = |i: usize| &values_of(&events[i])[0];

    for (i, &(tag, step, value)) in SCALARS.iter().enumerate() {
        assert_eq!((v(1 + i).tag.as_str(), events[1 + i].step), (tag, step));
        assert_eq!(v(1 + i).value, Some(Value::SimpleValue(value)));
    }

    assert_eq!((v(6).tag.as_str(), events[6].step), HISTOGRAM);
    let want = histogram::histogram("", &histogram_values()).unwrap();
    assert_eq!(v(6).value, Some(Value::Histo(want.clone())));
    assert_eq!(
        (want.min, want.max, want.num),
        (-1.0, f64::from(0.998f32), 1000.0)
    );
    assert_eq!(want.bucket.iter().sum::<f64>(), 1000.0);

    let (tag, step, width, height) = IMAGE;
    assert_eq!((v(7).tag.as_str(), events[7].step), (tag, step));
    let Some(Value::Image(img)) = &v(7).value else {
        panic!("{:?}", v(7))
    };
    assert_eq!(
        (img.width, img.height, img.colorspace),
        (width as i32, height as i32, 3)
    );
    let png =
        image::load_from_memory_with_format(&img.encoded_image_string, image::ImageFormat::Png)
            .unwrap();
    assert_eq!(png.color(), image::ColorType::Rgb8);
    assert_eq!((png.width(), png.height()), (width, height));
    assert_eq!(png.into_rgb8().into_raw(), image_rgb());

    assert_eq!((v(8).tag.as_str(), events[8].step), TEXT);
    let meta = v(8).metadata.as_ref().unwrap();
    assert_eq!(meta.plugin_data.as_ref().unwrap().plugin_name, "text");
    let Some(Value::Tensor(t)) = &v(8).value else {
        panic!("{:?}", v(8))
    };
    assert_eq!(
        (t.dtype, t.tensor_shape.as_ref().unwrap().dim.len()),
        (7, 0)
    );
    assert_eq!(t.string_val, vec![MARKDOWN.as_bytes().to_vec()]);

    assert_eq!((v(9).tag.as_str(), events[9].step), (METRIC, 20));
    assert_eq!(v(9).value, Some(Value::SimpleValue(score(1))));

    let tags: Vec<&str> = (10..13).map(|i| v(i).tag.as_str()).collect();
    assert_eq!(
        tags,
        [
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info"
        ]
    );
    let data: Vec<Data> = (10..13)
        .map(|i| {
            assert_eq!(v(i).value, None);
            let plugin = v(i)
                .metadata
                .as_ref()
                .unwrap()
                .plugin_data
                .as_ref()
                .unwrap();
            assert_eq!(plugin.plugin_name, "hparams");
            let d = HParamsPluginData::decode(plugin.content.as_slice()).unwrap();
            assert_eq!(d.version, 0);
            d.data.unwrap()
        })
        .collect();
    let Data::Experiment(exp) = &data[0] else {
        panic!("{:?}", data[0])
    };
    let infos: Vec<(&str, i32)> = exp
        .hparam_infos
        .iter()
        .map(|h| (h.name.as_str(), h.r#type))
        .collect();
    assert_eq!(infos, [("lr", 3), ("optimizer", 1), ("tied", 2)]);
    let metrics: Vec<(&str, &str)> = exp
        .metric_infos
        .iter()
        .map(|m| {
            m.name
                .as_ref()
                .map_or(("?", "?"), |n| (n.group.as_str(), n.tag.as_str()))
        })
        .collect();
    assert_eq!(metrics, [("", METRIC)]);
    let Data::SessionStartInfo(start) = &data[1] else {
        panic!("{:?}", data[1])
    };
    let got: Vec<(&str, Option<&Kind>)> = start
        .hparams
        .iter()
        .map(|(k, v)| (k.as_str(), v.kind.as_ref()))
        .collect();
    assert_eq!(
        got,
        [
            ("lr", Some(&Kind::NumberValue(3e-4))),
            ("optimizer", Some(&Kind::StringValue("sgd".into()))),
            ("tied", Some(&Kind::BoolValue(false))),
        ]
    );
    assert_eq!(start.start_time_secs, T);
    let Data::SessionEndInfo(end) = &data[2] else {
        panic!("{:?}", data[2])
    };
    assert_eq!((end.status, end.end_time_secs), (1, T));
}

#[test]
fn same_calls_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pa = write_run(a.path(), 0, Clock::Fixed(T)).unwrap();
    let pb = write_run(b.path(), 0, Clock::Fixed(T)).unwrap();
    assert_ne!(
        pa.file_name(),
        pb.file_name(),
        "each writer gets its own file number"
    );
    assert_eq!(std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
}

/// The first record of a real event file (tensorboard/data/server/tf_record.rs), from our writer.
#[test]
fn first_record_matches_tensorboard_vector() {
    let wall = f64::from_le_bytes([0x00, 0x00, 0x80, 0x38, 0x99, 0xd6, 0xd7, 0x41]);
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let w =
            mmerge_tensorboard::EventWriter::with_clock(dir.path(), Clock::Fixed(wall)).unwrap();
        w.path().to_path_buf()
    };
    let mut want = vec![0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22];
    want.extend_from_slice(&[
        0x09, 0x00, 0x00, 0x80, 0x38, 0x99, 0xd6, 0xd7, 0x41, 0x1a, 0x0d,
    ]);
    want.extend_from_slice(b"brain.Event:2");
    want.extend_from_slice(&[0x12, 0x4b, 0x36, 0xab]);
    assert_eq!(std::fs::read(path).unwrap(), want);
}

/// TF2's `tf.summary.scalar("accuracy", 0.99, step=77)` record (tf_record.rs), from our structs.
#[test]
fn tf2_scalar_record_matches_tensorboard_vector() {
    let mut data = vec![
        0x09, 0xc4, 0x05, 0xb7, 0x3d, 0x99, 0xd6, 0xd7, 0x41, 0x10, 0x4d, 0x2a, 0x25,
    ];
    data.extend_from_slice(&[0x0a, 0x23, 0x0a, 0x08]);
    data.extend_from_slice(b"accuracy");
    data.extend_from_slice(&[
        0x42, 0x0a, 0x08, 0x01, 0x12, 0x00, 0x22, 0x04, 0xa4, 0x70, 0x7d, 0x3f,
    ]);
    data.extend_from_slice(&[0x4a, 0x0b, 0x0a, 0x09, 0x0a, 0x07]);
    data.extend_from_slice(b"scalars");
    assert_eq!(data.len(), 50);
    let event = Event {
        wall_time: f64::from_le_bytes(data[1..9].try_into().unwrap()),
        step: 77,
        what: Some(What::Summary(Summary {
            value: vec![SummaryValue {
                tag: "accuracy".into(),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "scalars".into(),
                        content: vec![],
                    }),
                    ..Default::default()
                }),
                value: Some(Value::Tensor(TensorProto {
                    dtype: DT_FLOAT,
                    tensor_shape: Some(TensorShapeProto::default()),
                    tensor_content: 0.99f32.to_le_bytes().to_vec(),
                    ..Default::default()
                })),
            }],
        })),
    };
    assert_eq!(event.encode_to_vec(), data);
    assert_eq!(Event::decode(data.as_slice()).unwrap(), event);
    let mut rec = Vec::new();
    frame_into(&data, &mut rec);
    assert_eq!(&rec[8..12], &[0x24, 0x19, 0x56, 0xec]);
    assert_eq!(&rec[rec.len() - 4..], &[0xa5, 0x5b, 0x64, 0x33]);
}

#[test]
fn corrupted_byte_fails_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path(), 0, Clock::Fixed(T)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let spans = record_spans(&good);
    assert_eq!(spans.len(), 13);
    let (offset, len) = spans[7]; // the image
    let at = |e: &TensorboardError| match e {
        TensorboardError::DataCrc { offset, .. } | TensorboardError::LengthCrc { offset, .. } => {
            *offset
        }
        other => panic!("{other}"),
    };

    let mut bad = good.clone();
    bad[offset + 12 + (len - 16) / 2] ^= 0x10; // a data byte
    std::fs::write(&path, &bad).unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(matches!(err, TensorboardError::DataCrc { .. }), "{err}");
    assert_eq!(at(&err), offset as u64);
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(&format!("byte {offset}")),
        "{msg}"
    );

    let mut bad = good.clone();
    bad[offset + 1] ^= 0x01; // the length
    let err = decode_events(Path::new("f"), &bad).unwrap_err();
    assert!(matches!(err, TensorboardError::LengthCrc { .. }), "{err}");
    assert_eq!(at(&err), offset as u64);

    let mut bad = good.clone();
    bad[offset + len - 1] ^= 0x80; // the stored data CRC
    let err = decode_events(Path::new("f"), &bad).unwrap_err();
    assert_eq!(at(&err), offset as u64);
}

#[test]
fn truncated_file_fails_at_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path(), 0, Clock::Fixed(T)).unwrap();
    let good = std::fs::read(&path).unwrap();
    let &(last, len) = record_spans(&good).last().unwrap();
    for cut in [1, 4, len - 12, len - 5] {
        let short = &good[..good.len() - cut];
        std::fs::write(&path, short).unwrap();
        let err = read_events(&path).unwrap_err();
        let TensorboardError::Truncated {
            offset,
            needed,
            available,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(
            (*offset, *available),
            (last as u64, (len - cut) as u64),
            "cut {cut}"
        );
        assert_eq!(
            *needed,
            if len - cut < 12 { 12 } else { len as u64 },
            "cut {cut}"
        );
    }
    assert_eq!(
        decode_events(Path::new("f"), &good[..last]).unwrap().len(),
        12
    );
}

#[test]
fn image_size_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = mmerge_tensorboard::EventWriter::with_clock(dir.path(), Clock::Fixed(T)).unwrap();
    let err = w.image("img", 0, 2, 2, &[0; 11]).unwrap_err();
    assert!(
        matches!(
            err,
            TensorboardError::ImageSize {
                len: 11,
                expected: 12,
                ..
            }
        ),
        "{err}"
    );
    let err = w.image("img", 0, 1 << 31, 0, &[]).unwrap_err();
    assert!(
        matches!(err, TensorboardError::ImageTooLarge { .. }),
        "{err}"
    );
    // Nothing was written for either.
    w.flush().unwrap();
    assert_eq!(read_events(w.path()).unwrap().len(), 1);
}

proptest! {
    /// Random scalars, histograms and texts: every record comes back, both CRCs verified.
    #[test]
    fn random_records_round_trip(
        records in proptest::collection::vec(
            (0u8..3, "[a-z/_]{1,12}", any::<i64>(), proptest::collection::vec(-1e30f32..1e30, 1..50), ".{0,40}"),
            0..30,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = mmerge_tensorboard::EventWriter::with_clock(dir.path(), Clock::Fixed(T)).unwrap();
        for (kind, tag, step, values, text) in &records {
            match kind {
                0 => w.scalar(tag, *step, values[0]).unwrap(),
                1 => w.histogram(tag, *step, values).unwrap(),
                _ => w.text(tag, *step, text).unwrap(),
            }
        }
        w.flush().unwrap();
        let events = read_events(w.path()).unwrap();
        prop_assert_eq!(events.len(), records.len() + 1);
        for ((kind, tag, step, values, text), event) in records.iter().zip(&events[1..]) {
            prop_assert_eq!(event.step, *step);
            let v = &values_of(event)[0];
            prop_assert_eq!(&v.tag, tag);
            match (kind, &v.value) {
                (0, Some(Value::SimpleValue(x))) => prop_assert_eq!(x.to_bits(), values[0].to_bits()),
                (1, Some(Value::Histo(h))) => prop_assert_eq!(h, &histogram::histogram(tag, values).unwrap()),
                (2, Some(Value::Tensor(t))) => prop_assert_eq!(&t.string_val, &vec![text.as_bytes().to_vec()]),
                other => prop_assert!(false, "kind {} read back as {:?}", kind, other.1),
            }
        }
    }
}
