//! Merge parameters as mergekit writes them: a scalar (`weight: 0.5`), a gradient over depth
//! (`t: [0, 0.5, 1]`, linearly interpolated at the tensor's depth t ∈ [0, 1]), or a list of
//! `{filter, value}` entries where the first entry whose filter is a substring of the tensor
//! name (or that has no filter) gives the value.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One parameter's setting, before it is evaluated for a tensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Number(f64),
    Gradient(Vec<f64>),
    Filtered(Vec<FilterEntry>),
}

/// One entry of a filtered parameter list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterEntry {
    #[serde(default)]
    pub filter: Option<String>,
    pub value: ParamValue,
}

/// A parameter's value for one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Number(f64),
}

/// Parameters by name, as they appear under a `parameters:` key.
pub type ParamMap = BTreeMap<String, ParamValue>;

impl ParamValue {
    /// Evaluates the setting for tensor `key` at depth `t` (see the module docs). `None` when a
    /// filter list has no entry that applies.
    pub fn evaluate(&self, key: &str, t: f64) -> Option<Scalar> {
        match self {
            ParamValue::Bool(b) => Some(Scalar::Bool(*b)),
            ParamValue::Number(x) => Some(Scalar::Number(*x)),
            ParamValue::Gradient(g) => interpolate(g, t).map(Scalar::Number),
            ParamValue::Filtered(entries) => entries
                .iter()
                .find(|e| e.filter.as_deref().is_none_or(|f| key.contains(f)))
                .and_then(|e| e.value.evaluate(key, t)),
        }
    }
}

/// Piecewise-linear interpolation of `g` (evenly spaced over [0, 1]) at `t`, as mergekit does:
/// `s = t·(n−1)`, `i = ⌊s⌋`, value `(1−(s−i))·g[i] + (s−i)·g[min(i+1, n−1)]`.
pub fn interpolate(g: &[f64], t: f64) -> Option<f64> {
    let n = g.len();
    if n == 0 {
        return None;
    }
    let s = t.clamp(0.0, 1.0) * (n - 1) as f64;
    let i = (s.floor() as usize).min(n - 1);
    let j = (i + 1).min(n - 1);
    let frac = s - i as f64;
    Some((1.0 - frac) * g[i] + frac * g[j])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> ParamValue {
        serde_yaml_ng::from_str(y).unwrap()
    }

    #[test]
    fn scalars_gradients_and_filters() {
        assert_eq!(parse("0.5").evaluate("x", 0.3), Some(Scalar::Number(0.5)));
        assert_eq!(parse("true").evaluate("x", 0.3), Some(Scalar::Bool(true)));
        let g = parse("[0, 0.5, 1]");
        assert_eq!(g.evaluate("x", 0.0), Some(Scalar::Number(0.0)));
        assert_eq!(g.evaluate("x", 0.25), Some(Scalar::Number(0.25)));
        assert_eq!(g.evaluate("x", 0.75), Some(Scalar::Number(0.75)));
        assert_eq!(g.evaluate("x", 1.0), Some(Scalar::Number(1.0)));
        let f = parse(
            "- filter: self_attn\n  value: [0, 1]\n- filter: mlp\n  value: 0.9\n- value: 0.5\n",
        );
        assert_eq!(
            f.evaluate("model.layers.0.self_attn.q_proj.weight", 0.5),
            Some(Scalar::Number(0.5))
        );
        assert_eq!(
            f.evaluate("model.layers.0.self_attn.q_proj.weight", 1.0),
            Some(Scalar::Number(1.0))
        );
        assert_eq!(
            f.evaluate("model.layers.0.mlp.up_proj.weight", 0.0),
            Some(Scalar::Number(0.9))
        );
        assert_eq!(
            f.evaluate("model.norm.weight", 0.0),
            Some(Scalar::Number(0.5))
        );
        let only = parse("- filter: mlp\n  value: 1\n");
        assert_eq!(only.evaluate("lm_head.weight", 0.0), None);
    }
}
