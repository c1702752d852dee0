//! Tux Paint stamps from Debian `tuxpaint-stamps-default`: `<sources>/tuxpaint/<category>/
//! .../<name>.txt` with `<name>.png` beside it (`datasets/build-real-assets` renders the
//! stamps that ship only as SVG to PNG). Line 1 of the `.txt` is the English caption (the
//! other lines are translations, `xx.utf8=...`); the first folder is the category.

use std::path::{Path, PathBuf};

use super::imagetext::Category;
use crate::error::{DataError, Result, io};

/// The 16 top-level folders: VQA answer, the phrase in questions and statements, and the
/// class folder.
pub const CATEGORIES: [Category; 16] = [
    Category::new("animals", "animals", "an animal", "animals"),
    Category::new("clothes", "clothes", "a piece of clothing", "clothes"),
    Category::new("food", "food", "food", "food"),
    Category::new("hobbies", "hobbies", "a hobby item", "hobbies"),
    Category::new("household", "household", "a household item", "household"),
    Category::new("medical", "medical", "a medical item", "medical"),
    Category::new("military", "military", "a military item", "military"),
    Category::new(
        "naturalforces",
        "natural forces",
        "a force of nature",
        "naturalforces",
    ),
    Category::new("people", "people", "a person or body part", "people"),
    Category::new("plants", "plants", "a plant", "plants"),
    Category::new("seasonal", "seasonal", "a holiday item", "seasonal"),
    Category::new("space", "space", "something from space", "space"),
    Category::new("sports", "sports", "sports equipment", "sports"),
    Category::new("symbols", "symbols", "a symbol", "symbols"),
    Category::new("town", "town", "something from a town", "town"),
    Category::new("vehicles", "vehicles", "a vehicle", "vehicles"),
];

/// One stamp with a caption and an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The path under `tuxpaint/` without extension, `/`-separated, e.g. `food/fruit/cherimoya`.
    pub key: String,
    /// Index into [`CATEGORIES`].
    pub category: usize,
    pub caption: String,
    pub image: PathBuf,
}

/// Line 1 of a stamp's `.txt`, trimmed (a byte-order mark too); `None` when it is empty.
pub fn caption(text: &str) -> Option<String> {
    let first = text.lines().next()?.trim_start_matches('\u{feff}').trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// Every stamp with a caption and a `.png` (sorted by key), and the number of captions that
/// have no image.
pub fn load(dir: &Path) -> Result<(Vec<Stamp>, usize)> {
    let mut txts = Vec::new();
    walk(dir, &mut txts)?;
    txts.sort();
    let mut stamps = Vec::new();
    let mut without_image = 0;
    for txt in txts {
        let image = txt.with_extension("png");
        if !image.is_file() {
            without_image += 1;
            continue;
        }
        let rel = txt.strip_prefix(dir).unwrap_or(&txt).with_extension("");
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let top = key.split('/').next().unwrap_or_default();
        let category = CATEGORIES
            .iter()
            .position(|c| c.label == top)
            .ok_or_else(|| DataError::BadRecord {
                path: txt.clone(),
                record: key.clone(),
                reason: format!(
                    "top-level folder `{top}` is not a known category ({})",
                    CATEGORIES.map(|c| c.label).join(", ")
                ),
            })?;
        let bytes = io(&txt, std::fs::read(&txt))?;
        let caption =
            caption(&String::from_utf8_lossy(&bytes)).ok_or_else(|| DataError::BadRecord {
                path: txt.clone(),
                record: key.clone(),
                reason: "line 1 (the English caption) is empty".into(),
            })?;
        stamps.push(Stamp {
            key,
            category,
            caption,
            image,
        });
    }
    Ok((stamps, without_image))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in io(dir, std::fs::read_dir(dir))? {
        let e = io(dir, e)?;
        let p = e.path();
        let ft = io(&p, e.file_type())?;
        if ft.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "txt") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_is_line_one() {
        let txt = "\u{feff}A cherimoya fruit. \nde.utf8=Eine Cherimoya.\n";
        assert_eq!(caption(txt).as_deref(), Some("A cherimoya fruit."));
        assert_eq!(caption("\n fr.utf8=x"), None);
    }
}
