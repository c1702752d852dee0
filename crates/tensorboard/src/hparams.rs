//! The three hparams summaries that let TensorBoard's HParams tab compare runs.
//!
//! Source: `tensorboard/plugins/hparams/{metadata.py,plugin_data.proto,api.proto}`. Each is
//! a `Summary.Value` with no value, only `metadata.plugin_data = { plugin_name: "hparams",
//! content: HParamsPluginData{version 0, …}.encode() }`, under the tags
//! [`EXPERIMENT_TAG`] (the hparam names and types, and the metrics' scalar tags),
//! [`SESSION_START_TAG`] (this run's values) and [`SESSION_END_TAG`] (status `SUCCESS`).
//! The plugin takes every run that holds a session-start summary as one session, and a
//! metric's values from the scalar with the metric's tag in that run (metric group `""`).
//! It reads the experiment summary of the first run that has one, so runs to be compared
//! should log the same hparam names and metrics.

use std::collections::BTreeMap;

use prost::Message;

use crate::proto::{
    DataType, Experiment, HParamInfo, HParamsPluginData, MetricInfo, MetricName, PluginData,
    ProtoValue, SessionEndInfo, SessionStartInfo, Status, SummaryMetadata, SummaryValue,
    hparams_plugin_data::Data, proto_value::Kind,
};

/// The plugin name of the hparams summaries.
pub const PLUGIN_NAME: &str = "hparams";
/// Tag of the experiment summary.
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of the session-start summary.
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of the session-end summary.
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// One hyperparameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum HValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl HValue {
    fn data_type(&self) -> DataType {
        match self {
            HValue::Bool(_) => DataType::Bool,
            HValue::Number(_) => DataType::Float64,
            HValue::Text(_) => DataType::String,
        }
    }

    fn to_proto(&self) -> ProtoValue {
        let kind = match self {
            HValue::Bool(b) => Kind::BoolValue(*b),
            HValue::Number(x) => Kind::NumberValue(*x),
            HValue::Text(s) => Kind::StringValue(s.clone()),
        };
        ProtoValue { kind: Some(kind) }
    }
}

/// The experiment, session-start and session-end summaries for `config` and the scalar
/// tags `metrics`, in that order.
pub(crate) fn summaries(
    config: &BTreeMap<String, HValue>,
    metrics: &[&str],
    start_secs: f64,
    end_secs: f64,
) -> [SummaryValue; 3] {
    let experiment = Experiment {
        hparam_infos: config
            .iter()
            .map(|(name, v)| HParamInfo {
                name: name.clone(),
                r#type: v.data_type() as i32,
                ..Default::default()
            })
            .collect(),
        metric_infos: metrics
            .iter()
            .map(|&tag| MetricInfo {
                name: Some(MetricName {
                    group: String::new(),
                    tag: tag.into(),
                }),
                ..Default::default()
            })
            .collect(),
        time_created_secs: start_secs,
        ..Default::default()
    };
    let start = SessionStartInfo {
        hparams: config
            .iter()
            .map(|(name, v)| (name.clone(), v.to_proto()))
            .collect(),
        start_time_secs: start_secs,
        ..Default::default()
    };
    let end = SessionEndInfo {
        status: Status::Success as i32,
        end_time_secs: end_secs,
    };
    [
        value(EXPERIMENT_TAG, Data::Experiment(experiment)),
        value(SESSION_START_TAG, Data::SessionStartInfo(start)),
        value(SESSION_END_TAG, Data::SessionEndInfo(end)),
    ]
}

fn value(tag: &str, data: Data) -> SummaryValue {
    let content = HParamsPluginData {
        version: 0,
        data: Some(data),
    }
    .encode_to_vec();
    SummaryValue {
        tag: tag.into(),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: PLUGIN_NAME.into(),
                content,
            }),
            ..Default::default()
        }),
        value: None,
    }
}
