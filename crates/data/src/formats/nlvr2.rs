//! NLVR2: JSON Lines, one statement about a pair of images per line, label "True"/"False"
//! (<https://github.com/lil-lab/nlvr/tree/master/nlvr2>). The pair's images are
//! `<identifier without its last -N>-img0.png` and `-img1.png` (train images sit in the
//! numbered subfolder given by `directory`).

use serde::{Deserialize, Serialize};

/// One line of `train.json` / `dev.json` / `test1.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub identifier: String,
    pub sentence: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}
