//! Merging units: the permutable feature axes of a network, each shared by a set of tensors
//! (MuDSC arXiv 2403.01753 §3, "permutation spec" of Git Re-Basin arXiv 2209.04836), and
//! the spec of mmerge's multiway transformer.
//!
//! A unit of width O lists, per model, the tensors and axes that index its O features: an
//! `Out` axis produces them (a layer's output rows, a norm's weight), an `In` axis reads them
//! (the next layer's input columns). Permuting every member of a unit consistently leaves the
//! network's function unchanged; layer norm is permutation-equivariant, so its weight and bias
//! are `Out` members of the residual unit.
//!
//! Two specs of the multiway transformer (`[out, in]` Linear layout):
//! - [`model_units`] aligns two checkpoints with the same keys: one residual-stream unit for
//!   the whole network, and per layer and stored expert a QK, a VO (both grouped by heads) and
//!   an MLP unit.
//! - [`expert_units`] aligns two experts inside one checkpoint (`a` = the reference expert's
//!   keys, `b` = the other's): the QK, VO and MLP units of every layer part that stores both.
//!   There is no residual unit: all experts of one model read and write the same residual
//!   stream, so its transform is the identity.
//!
//! An `embeddings.*` or `encoder.*` key outside this spec is an error (it might read the
//! residual stream and be left unpermuted); other keys, e.g. `heads.mlm.decoder`, are in no
//! unit. Biases of q, k, v and fc1 are members when present.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::AlignError;

/// A dense row-major float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A loaded checkpoint (or the part of it that is aligned).
pub type Weights = BTreeMap<String, Tensor>;

/// How a member axis relates to its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The axis indexes the unit's features (outputs).
    Out,
    /// The axis reads the unit's features (the next layer's input).
    In,
}

/// One tensor axis of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: String,
    pub axis: usize,
    pub role: Role,
}

/// A merging unit: `a` and `b` list the same roles in the same order, as keys of model A and of
/// model B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub width: usize,
    /// 1, or the attention heads: features `h·width/groups..(h+1)·width/groups` are head `h`.
    pub groups: usize,
    pub a: Vec<Member>,
    pub b: Vec<Member>,
}

/// A key's shape in a model, `None` when the model lacks it.
pub type ShapeOf<'a> = &'a dyn Fn(&str) -> Option<Vec<usize>>;

/// Checks units against the shapes of models A and B (`None`: that side's keys are not
/// checked): unique names, `a`/`b` with the same roles, every key present, every axis in range
/// and of the unit's width, groups dividing the width, no tensor axis in two units.
pub fn validate_units(units: &[Unit], shapes: [Option<ShapeOf>; 2]) -> Result<(), AlignError> {
    let mut names = HashSet::new();
    let mut axes = [HashMap::new(), HashMap::new()];
    for unit in units {
        let bad = |message: String| AlignError::Unit {
            unit: unit.name.clone(),
            message,
        };
        if !names.insert(unit.name.as_str()) {
            return Err(bad("two units have this name".into()));
        }
        if unit.groups == 0 || unit.width % unit.groups != 0 {
            return Err(bad(format!(
                "{} groups do not divide width {}",
                unit.groups, unit.width
            )));
        }
        if unit.a.len() != unit.b.len()
            || unit
                .a
                .iter()
                .zip(&unit.b)
                .any(|(a, b)| (a.axis, a.role) != (b.axis, b.role))
        {
            return Err(bad("`a` and `b` list different axes or roles".into()));
        }
        for (side, (members, shape_of)) in [&unit.a, &unit.b].into_iter().zip(shapes).enumerate() {
            let Some(shape_of) = shape_of else { continue };
            for m in members {
                let shape = shape_of(&m.key).ok_or_else(|| AlignError::MissingKey {
                    key: m.key.clone(),
                    model: if side == 0 { "A" } else { "B" },
                })?;
                let found = shape.get(m.axis).copied();
                if found != Some(unit.width) {
                    return Err(AlignError::Width {
                        unit: unit.name.clone(),
                        key: m.key.clone(),
                        axis: m.axis,
                        expected: unit.width,
                        found,
                    });
                }
                if let Some(other) = axes[side].insert((m.key.as_str(), m.axis), &unit.name) {
                    return Err(bad(format!(
                        "axis {} of `{}` is also in unit `{other}`",
                        m.axis, m.key
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Units aligning two multiway checkpoints with the same keys (see the module doc).
pub fn model_units(keys: &[(String, Vec<usize>)], heads: usize) -> Result<Vec<Unit>, AlignError> {
    let shapes = shape_map(keys);
    let mut residual = Vec::new();
    let mut parts = BTreeSet::new();
    for (key, _) in keys {
        let (res, part) = classify(key)?;
        if let Some((axis, role)) = res {
            residual.push(member(key, axis, role));
        }
        parts.extend(part);
    }
    let mut units = Vec::new();
    if let Some(first) = residual.first() {
        let width = axis_len(&shapes, first);
        units.push(Unit {
            name: "residual".into(),
            width,
            groups: 1,
            a: residual.clone(),
            b: residual,
        });
    }
    for (layer, part, expert) in &parts {
        let prefix = format!("encoder.layers.{layer}.{part}.{expert}");
        for (suffix, grouped, members) in part_members(part, &prefix, &shapes) {
            let width = axis_len(&shapes, &members[0]);
            units.push(Unit {
                name: format!("{prefix}.{suffix}"),
                width,
                groups: if grouped { heads } else { 1 },
                a: members.clone(),
                b: members,
            });
        }
    }
    check(&units, &shapes)?;
    Ok(units)
}

/// Units aligning expert `other` to expert `reference` inside one multiway checkpoint (see the
/// module doc). Unit names are `encoder.layers.{i}.{attn|ffn}.{reference}+{other}.{qk|vo|mlp}`.
pub fn expert_units(
    keys: &[(String, Vec<usize>)],
    heads: usize,
    reference: &str,
    other: &str,
) -> Result<Vec<Unit>, AlignError> {
    let shapes = shape_map(keys);
    let mut parts = BTreeSet::new();
    for (key, _) in keys {
        parts.extend(classify(key)?.1);
    }
    let mut units = Vec::new();
    for (layer, part, expert) in &parts {
        if expert != reference || !parts.contains(&(*layer, *part, other.to_string())) {
            continue;
        }
        let pa = format!("encoder.layers.{layer}.{part}.{reference}");
        let pb = format!("encoder.layers.{layer}.{part}.{other}");
        for (suffix, grouped, a) in part_members(part, &pa, &shapes) {
            let b = a
                .iter()
                .map(|m| member(&format!("{pb}{}", &m.key[pa.len()..]), m.axis, m.role))
                .collect();
            let width = axis_len(&shapes, &a[0]);
            units.push(Unit {
                name: format!("encoder.layers.{layer}.{part}.{reference}+{other}.{suffix}"),
                width,
                groups: if grouped { heads } else { 1 },
                a,
                b,
            });
        }
    }
    check(&units, &shapes)?;
    Ok(units)
}

type Shapes<'a> = HashMap<&'a str, &'a [usize]>;

fn shape_map(keys: &[(String, Vec<usize>)]) -> Shapes<'_> {
    keys.iter()
        .map(|(k, s)| (k.as_str(), s.as_slice()))
        .collect()
}

fn check(units: &[Unit], shapes: &Shapes) -> Result<(), AlignError> {
    let shape_of = |k: &str| shapes.get(k).map(|s| s.to_vec());
    validate_units(units, [Some(&shape_of), Some(&shape_of)])
}

/// The length of a member's axis, 0 when the key or axis is missing (validation reports it).
fn axis_len(shapes: &Shapes, m: &Member) -> usize {
    shapes
        .get(m.key.as_str())
        .and_then(|s| s.get(m.axis))
        .copied()
        .unwrap_or(0)
}

fn member(key: &str, axis: usize, role: Role) -> Member {
    Member {
        key: key.to_string(),
        axis,
        role,
    }
}

/// The QK and VO units (grouped by heads) of an attention expert, or the MLP unit of an FFN
/// expert, under `prefix`: (suffix, grouped, members). Biases are members when present.
fn part_members(
    part: &str,
    prefix: &str,
    shapes: &Shapes,
) -> Vec<(&'static str, bool, Vec<Member>)> {
    let list = |items: &[(&str, usize, Role)]| -> Vec<Member> {
        items
            .iter()
            .map(|&(name, axis, role)| member(&format!("{prefix}.{name}"), axis, role))
            .filter(|m| !m.key.ends_with(".bias") || shapes.contains_key(m.key.as_str()))
            .collect()
    };
    use Role::{In, Out};
    if part == "attn" {
        vec![
            (
                "qk",
                true,
                list(&[
                    ("q.weight", 0, Out),
                    ("q.bias", 0, Out),
                    ("k.weight", 0, Out),
                    ("k.bias", 0, Out),
                ]),
            ),
            (
                "vo",
                true,
                list(&[
                    ("v.weight", 0, Out),
                    ("v.bias", 0, Out),
                    ("out.weight", 1, In),
                ]),
            ),
        ]
    } else {
        vec![(
            "mlp",
            false,
            list(&[
                ("fc1.weight", 0, Out),
                ("fc1.bias", 0, Out),
                ("fc2.weight", 1, In),
            ]),
        )]
    }
}

/// (layer, "attn" | "ffn", expert).
type Part = (usize, &'static str, String);

/// A key's (axis, role) in the residual unit, and its layer part.
type Place = (Option<(usize, Role)>, Option<Part>);

/// A key's axis in the residual unit and the layer part it belongs to. Unknown `embeddings.*`
/// and `encoder.*` keys are an error, so no tensor touching the residual stream is silently
/// left out; other keys (the heads' internal spaces) are in no unit.
fn classify(key: &str) -> Result<Place, AlignError> {
    use Role::{In, Out};
    let p: Vec<&str> = key.split('.').collect();
    let unknown = || AlignError::UnknownKey(key.to_string());
    Ok(match p.as_slice() {
        ["embeddings", "cls_token" | "image_pos"] => (Some((2, Out)), None),
        ["embeddings", "patch" | "text_norm", "weight" | "bias"] => (Some((0, Out)), None),
        ["embeddings", "word" | "text_pos" | "token_type", "weight"] => (Some((1, Out)), None),
        ["encoder", "norm", "weight" | "bias"] => (Some((0, Out)), None),
        ["encoder", "layers", i, rest @ ..] => {
            let layer: usize = i.parse().map_err(|_| unknown())?;
            let part = |part, e: &str| Some((layer, part, e.to_string()));
            match rest {
                ["gamma1" | "gamma2"] | ["norm1" | "norm2", _, "weight" | "bias"] => {
                    (Some((0, Out)), None)
                }
                ["attn", e, "out", "weight" | "bias"] => (Some((0, Out)), part("attn", e)),
                ["attn", e, "q" | "k" | "v", "weight"] => (Some((1, In)), part("attn", e)),
                ["attn", e, "q" | "k" | "v", "bias"] => (None, part("attn", e)),
                ["ffn", e, "fc2", "weight" | "bias"] => (Some((0, Out)), part("ffn", e)),
                ["ffn", e, "fc1", "weight"] => (Some((1, In)), part("ffn", e)),
                ["ffn", e, "fc1", "bias"] => (None, part("ffn", e)),
                _ => return Err(unknown()),
            }
        }
        ["heads", "itc", "image_proj" | "text_proj", "weight"]
        | ["heads", "itm" | "mlm", "dense", "weight"] => (Some((1, In)), None),
        ["embeddings" | "encoder", ..] => return Err(unknown()),
        _ => (None, None),
    })
}
