//! Text classification in GLUE style: a TSV with a header row (`sentence`/`text` and `label`
//! columns), or JSON Lines with `text` and `label` fields.

use serde::{Deserialize, Serialize};

/// One JSON Lines record (also the typed form of a TSV row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub text: String,
    pub label: String,
}
