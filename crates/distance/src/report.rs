//! Rendering a [`DistanceReport`]: versioned JSON and a terminal table.

use serde_json::{Map, Value, json};

use crate::compare::{DistanceReport, role_label};
use crate::distance::{Column, DISTANCES, Distances, GroupStats};

/// The `schema` tag of [`DistanceReport::to_json`]; bumped on any incompatible change.
pub const SCHEMA: &str = "mmerge.distance/1";

/// `{"tensors", "numel", distances...}` of a group, plus `extra` fields first.
fn group_json(extra: Map<String, Value>, g: &GroupStats) -> Value {
    let mut obj = extra;
    obj.insert("tensors".into(), json!(g.tensors));
    obj.insert("numel".into(), json!(g.numel()));
    insert_distances(&mut obj, &g.distances());
    Value::Object(obj)
}

/// Adds every metric; non-finite values become `null` (JSON has no NaN).
fn insert_distances(obj: &mut Map<String, Value>, m: &Distances) {
    for (k, v) in m.named() {
        obj.insert(k.into(), json!(v));
    }
}

impl DistanceReport {
    /// The report as JSON, schema `mmerge.distance/1` (also in `crates/distance/SCHEMA.md`):
    ///
    /// ```text
    /// {
    ///   "schema": "mmerge.distance/1",
    ///   "a": "<path of a>", "b": "<path of b>", "base": "<path of w0>" | null,
    ///   "mode": "weights" | "task_vectors",        // task_vectors iff base is not null
    ///   "tssd_top_k_percent": 20.0,
    ///   "aggregate": {"tensors": n, "numel": n, <distances>},
    ///   "layers":  [{"layer": "pre" | "0" | "1" | ... | "post", "tensors": n, "numel": n,
    ///                <distances>}, ...],           // pre, layers by index, post; only non-empty
    ///   "tensors": [{"name": "...", "layer": "pre" | "<i>" | "post", "shape": [..],
    ///                "numel": n, "tssd_count": m, <distances>}, ...],   // a's storage order
    ///   "skipped": [{"name": "...", "dtype": "I64", "shape": [..]}, ...]  // non-float
    /// }
    /// <distances> = "l2", "l2_normalized", "cosine", "sign", "soft_sign",
    ///             "truncated_soft_sign"   (numbers; null when NaN or infinite)
    /// ```
    ///
    /// A tensor's `"layer"` equals the `"layer"` of the group it is counted in. Groups'
    /// distances are those of the concatenated tensors, except `truncated_soft_sign`, which is
    /// the numel-weighted mean of the tensors' values; `tssd_count` is how many coordinates a
    /// tensor's TSSD kept.
    pub fn to_json(&self) -> Value {
        let path = |p: &std::path::Path| Value::String(p.to_string_lossy().into_owned());
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                let mut head = Map::new();
                head.insert("layer".into(), json!(role_label(l.role)));
                group_json(head, &l.stats)
            })
            .collect();
        let tensors: Vec<Value> = self
            .tensors
            .iter()
            .map(|t| {
                let mut obj = Map::new();
                obj.insert("name".into(), json!(t.name));
                obj.insert("layer".into(), json!(role_label(t.role)));
                obj.insert("shape".into(), json!(t.shape));
                obj.insert("numel".into(), json!(t.distance.acc.numel));
                obj.insert("tssd_count".into(), json!(t.distance.tssd_count));
                insert_distances(&mut obj, &t.distance.distances());
                Value::Object(obj)
            })
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|s| json!({"name": s.name, "dtype": s.dtype.as_str(), "shape": s.shape}))
            .collect();
        json!({
            "schema": SCHEMA,
            "a": path(&self.a),
            "b": path(&self.b),
            "base": self.base.as_deref().map_or(Value::Null, path),
            "mode": self.mode.as_str(),
            "tssd_top_k_percent": self.tssd_top_k_percent,
            "aggregate": group_json(Map::new(), &self.aggregate),
            "layers": layers,
            "tensors": tensors,
            "skipped": skipped,
        })
    }

    /// A compact table for the terminal: a header line, one row per layer group and a final
    /// `all` row, with columns layer, tensors, numel and one per distance of [`DISTANCES`].
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "distance between {} and {} ({}{}; TSSD top {}%)\n",
            self.a.display(),
            self.b.display(),
            self.mode.as_str().replace('_', " "),
            self.base
                .as_ref()
                .map(|w| format!(" minus {}", w.display()))
                .unwrap_or_default(),
            self.tssd_top_k_percent
        );
        s.push_str(&format!("{:>6} {:>7} {:>12}", "layer", "tensors", "numel"));
        for d in &DISTANCES {
            let (Column::Sci { header, width } | Column::Fixed { header, width }) = d.column;
            s.push_str(&format!(" {header:>width$}"));
        }
        s.push('\n');
        let rows = self.layers.iter().map(|l| (role_label(l.role), &l.stats));
        for (label, g) in rows.chain(std::iter::once(("all".to_string(), &self.aggregate))) {
            s.push_str(&format!("{label:>6} {:>7} {:>12}", g.tensors, g.numel()));
            for (d, v) in DISTANCES.iter().zip(g.distances().0) {
                s.push_str(&match d.column {
                    Column::Sci { width, .. } => format!(" {v:>width$.4e}"),
                    Column::Fixed { width, .. } => format!(" {v:>width$.5}"),
                });
            }
            s.push('\n');
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "skipped {} non-float tensor(s)\n",
                self.skipped.len()
            ));
        }
        s
    }
}
