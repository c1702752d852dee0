//! Image captions: COCO's `captions_<split>.json`, and Karpathy's split file
//! (`dataset_coco.json`, `dataset_flickr30k.json`), the standard retrieval splits.

use serde::{Deserialize, Serialize};

/// COCO `captions_<split>.json` (only the fields we use; others are ignored on read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCaptionsFile {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoCaption>,
}

/// One image entry of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

/// One caption of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCaption {
    pub id: u64,
    pub image_id: u64,
    pub caption: String,
}

/// Karpathy's `dataset_<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathyFile {
    pub images: Vec<KarpathyImage>,
    pub dataset: String,
}

/// One image with its captions and split (`train`, `restval`, `val` or `test`). COCO entries
/// have `filepath` (the folder, e.g. `val2014`) and `cocoid`; Flickr30k entries have neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathyImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filepath: Option<String>,
    pub filename: String,
    pub imgid: u64,
    pub split: String,
    pub sentences: Vec<KarpathySentence>,
    pub sentids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoid: Option<u64>,
}

/// One caption: `raw` text and its lower-cased, punctuation-free `tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathySentence {
    pub tokens: Vec<String>,
    pub raw: String,
    pub imgid: u64,
    pub sentid: u64,
}
