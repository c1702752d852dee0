//! Noto emoji from npm `emoji-datasource-google`: `<sources>/emoji/emoji.json` and the 64 px
//! PNGs in `<sources>/emoji/img/<image>`. The retrieval text is the lower-cased `name`; the
//! class is `category` (10).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::imagetext::Category;
use crate::error::{DataError, Result, io};

/// The ten `category` values: VQA answer, phrase, class folder.
pub const CATEGORIES: [Category; 10] = [
    Category::new(
        "Smileys & Emotion",
        "smileys & emotion",
        "a smiley",
        "smileys_emotion",
    ),
    Category::new(
        "People & Body",
        "people & body",
        "a person or body part",
        "people_body",
    ),
    Category::new("Component", "component", "a skin tone", "component"),
    Category::new(
        "Animals & Nature",
        "animals & nature",
        "an animal or plant",
        "animals_nature",
    ),
    Category::new(
        "Food & Drink",
        "food & drink",
        "food or drink",
        "food_drink",
    ),
    Category::new(
        "Travel & Places",
        "travel & places",
        "a place or means of travel",
        "travel_places",
    ),
    Category::new("Activities", "activities", "an activity", "activities"),
    Category::new("Objects", "objects", "an object", "objects"),
    Category::new("Symbols", "symbols", "a symbol", "symbols"),
    Category::new("Flags", "flags", "a flag", "flags"),
];

/// The fields of an `emoji.json` entry that are used (the others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub name: Option<String>,
    pub unified: String,
    pub image: String,
    pub category: String,
    #[serde(default)]
    pub subcategory: String,
}

/// One emoji.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emoji {
    /// `unified` (code points), e.g. `1F437`.
    pub key: String,
    /// The file name of its image, e.g. `1f437.png`.
    pub file: String,
    /// Index into [`CATEGORIES`].
    pub category: usize,
    /// The lower-cased name, e.g. `pig face`.
    pub caption: String,
    pub image: PathBuf,
}

/// Reads `emoji.json`; every entry must have a name, a known category and its image.
pub fn load(dir: &Path) -> Result<Vec<Emoji>> {
    let path = dir.join("emoji.json");
    let bytes = io(&path, std::fs::read(&path))?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
        path: path.clone(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let bad = |reason: String| DataError::BadRecord {
            path: path.clone(),
            record: e.unified.clone(),
            reason,
        };
        let category = CATEGORIES
            .iter()
            .position(|c| c.label == e.category)
            .ok_or_else(|| bad(format!("unknown category `{}`", e.category)))?;
        let name = e
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("no name".into()))?;
        if e.image.contains('/') || !e.image.ends_with(".png") {
            return Err(bad(format!("image `{}` is not a plain .png name", e.image)));
        }
        let image = dir.join("img").join(&e.image);
        if !image.is_file() {
            return Err(DataError::MissingImage {
                path: path.clone(),
                record: e.unified.clone(),
                image,
            });
        }
        out.push(Emoji {
            key: e.unified.clone(),
            file: e.image.clone(),
            category,
            caption: name.to_lowercase(),
            image,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
