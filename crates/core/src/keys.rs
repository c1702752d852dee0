//! Parameter keys: where a tensor sits in the network.
//!
//! A key is split on `.`; the first segment named `layers`, `layer`, `h`, `blocks` or `block`
//! that is followed by a decimal segment gives the layer index (`model.layers.3.mlp.up.weight`,
//! `transformer.h.0.attn.c_attn.weight`, `encoder.layer.11.output.dense.bias`,
//! `encoder.layers.3.ffn.vision.fc1.weight`). A key without one is a *pre* tensor when it looks
//! like an input embedding (it contains `embed`, `wte`, `wpe`, `patch`, `cls_token`,
//! `position`, `token_type`) and a *post* tensor otherwise (final norms, heads).
//!
//! Multiway keys (`encoder.layers.{i}.{attn|ffn|norm1|norm2}.{vision|text|vl|shared}.{leaf}`)
//! also yield their module, expert and leaf, so that "merge every FFN expert into the shared
//! FFN" is a rule over keys.

/// Segment names that precede a layer index.
pub const LAYER_SEGMENTS: [&str; 5] = ["layers", "layer", "h", "blocks", "block"];
const PRE_MARKERS: [&str; 7] = [
    "embed",
    "wte",
    "wpe",
    "patch",
    "cls_token",
    "position",
    "token_type",
];
/// Expert names of the multiway grammar.
pub const EXPERTS: [&str; 4] = ["vision", "text", "vl", "shared"];

/// A layer index found in a key, with the byte span of its digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRef {
    pub index: usize,
    pub span: (usize, usize),
}

/// Where a tensor sits relative to the layer stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Before the first layer (embeddings).
    Pre,
    /// Inside layer `i`.
    Layer(usize),
    /// After the last layer (final norm, heads).
    Post,
}

/// Finds the layer index of `key`, if any.
pub fn layer_ref(key: &str) -> Option<LayerRef> {
    let mut offset = 0;
    let mut prev: Option<&str> = None;
    for seg in key.split('.') {
        if let Some(p) = prev
            && LAYER_SEGMENTS.contains(&p)
            && !seg.is_empty()
            && seg.bytes().all(|b| b.is_ascii_digit())
            && let Ok(index) = seg.parse()
        {
            return Some(LayerRef {
                index,
                span: (offset, offset + seg.len()),
            });
        }
        prev = Some(seg);
        offset += seg.len() + 1;
    }
    None
}

/// Classifies `key` as pre, layer or post (see the module docs).
pub fn role(key: &str) -> TensorRole {
    if let Some(l) = layer_ref(key) {
        return TensorRole::Layer(l.index);
    }
    let lower = key.to_ascii_lowercase();
    if PRE_MARKERS.iter().any(|m| lower.contains(m)) {
        TensorRole::Pre
    } else {
        TensorRole::Post
    }
}

/// `key` with its layer index replaced by `index` (unchanged when it has none).
pub fn with_layer(key: &str, index: usize) -> String {
    match layer_ref(key) {
        Some(l) => format!("{}{index}{}", &key[..l.span.0], &key[l.span.1..]),
        None => key.to_string(),
    }
}

/// A tensor's place in a numbered stack, as mergekit infers it for checkpoints without an
/// architecture template: the first decimal segment that has a segment before and after it
/// (mergekit's `\.(\d+)\.`) is the layer index, and the key before it the stack's prefix.
/// `vision_tower.convs.2.proj.weight` is layer 2 of `vision_tower.convs`;
/// `vision_tower.blocks.1.0.fc1.weight` is layer 1 of `vision_tower.blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackRef<'a> {
    pub prefix: &'a str,
    pub index: usize,
}

/// Finds the numbered stack of `key`, if any (see [`StackRef`]).
pub fn stack_ref(key: &str) -> Option<StackRef<'_>> {
    let mut offset = 0;
    let segs: Vec<&str> = key.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if i > 0
            && i + 1 < segs.len()
            && !seg.is_empty()
            && seg.bytes().all(|b| b.is_ascii_digit())
            && let Ok(index) = seg.parse()
        {
            return Some(StackRef {
                prefix: &key[..offset - 1],
                index,
            });
        }
        offset += seg.len() + 1;
    }
    None
}

/// The layer count of every numbered stack among `keys`: one more than its largest index.
pub fn stack_sizes<'a>(
    keys: impl IntoIterator<Item = &'a str>,
) -> std::collections::HashMap<&'a str, usize> {
    let mut sizes = std::collections::HashMap::new();
    for s in keys.into_iter().filter_map(stack_ref) {
        let n = sizes.entry(s.prefix).or_insert(0);
        *n = (*n).max(s.index + 1);
    }
    sizes
}

/// The parts of a multiway key `….layers.{i}.{module}.{expert}.{leaf}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiwayKey<'a> {
    pub layer: usize,
    pub module: &'a str,
    pub expert: &'a str,
    pub leaf: &'a str,
}

/// Parses a multiway key; `None` when the key does not follow the grammar.
pub fn multiway(key: &str) -> Option<MultiwayKey<'_>> {
    let l = layer_ref(key)?;
    let rest = key.get(l.span.1 + 1..)?;
    let mut parts = rest.splitn(3, '.');
    let module = parts.next()?;
    let expert = parts.next()?;
    let leaf = parts.next()?;
    EXPERTS.contains(&expert).then_some(MultiwayKey {
        layer: l.index,
        module,
        expert,
        leaf,
    })
}

/// Number of layers implied by a set of keys: one more than the largest index (0 if none).
pub fn layer_count<'a>(keys: impl IntoIterator<Item = &'a str>) -> usize {
    keys.into_iter()
        .filter_map(layer_ref)
        .map(|l| l.index + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_layers_in_common_names() {
        let cases = [
            ("model.layers.3.mlp.up_proj.weight", Some(3)),
            ("transformer.h.0.attn.c_attn.weight", Some(0)),
            ("encoder.layer.11.output.dense.bias", Some(11)),
            ("blocks.7.norm1.weight", Some(7)),
            ("encoder.layers.3.ffn.vision.fc1.weight", Some(3)),
            ("model.embed_tokens.weight", None),
            ("lm_head.weight", None),
            ("model.layers.x.weight", None),
            ("h.12", Some(12)),
            ("layers", None),
            ("h2.3.weight", None),
        ];
        for (key, want) in cases {
            assert_eq!(layer_ref(key).map(|l| l.index), want, "{key}");
        }
    }

    #[test]
    fn stacks_as_mergekit_infers_them() {
        let cases = [
            (
                "model.layers.3.mlp.up_proj.weight",
                Some(("model.layers", 3)),
            ),
            ("h.0.attn.c_attn.weight", Some(("h", 0))),
            (
                "vision_tower.convs.2.proj.weight",
                Some(("vision_tower.convs", 2)),
            ),
            (
                "vision_tower.blocks.1.0.fc1.weight",
                Some(("vision_tower.blocks", 1)),
            ),
            ("h.12", None),
            ("0.weight", None),
            ("image_projection", None),
            ("model.layers..weight", None),
        ];
        for (key, want) in cases {
            assert_eq!(stack_ref(key).map(|s| (s.prefix, s.index)), want, "{key}");
        }
        let sizes = stack_sizes([
            "enc.layers.0.w",
            "enc.layers.1.w",
            "dec.layers.2.w",
            "convs.0.w",
            "head.w",
        ]);
        assert_eq!(sizes.len(), 3);
        assert_eq!(
            (sizes["enc.layers"], sizes["dec.layers"], sizes["convs"]),
            (2, 3, 1)
        );
    }

    #[test]
    fn roles_and_renumbering() {
        assert_eq!(role("model.embed_tokens.weight"), TensorRole::Pre);
        assert_eq!(role("transformer.wte.weight"), TensorRole::Pre);
        assert_eq!(
            role("embeddings.patch_embeddings.projection.weight"),
            TensorRole::Pre
        );
        assert_eq!(role("model.norm.weight"), TensorRole::Post);
        assert_eq!(role("lm_head.weight"), TensorRole::Post);
        assert_eq!(
            role("model.layers.2.self_attn.q_proj.weight"),
            TensorRole::Layer(2)
        );
        assert_eq!(
            with_layer("model.layers.2.mlp.w", 10),
            "model.layers.10.mlp.w"
        );
        assert_eq!(with_layer("h.9", 0), "h.0");
        assert_eq!(with_layer("lm_head.weight", 4), "lm_head.weight");
        assert_eq!(layer_count(["a.layers.0.w", "a.layers.4.w", "emb"]), 5);
    }

    #[test]
    fn multiway_grammar() {
        let k = multiway("encoder.layers.11.attn.vl.qkv.weight").unwrap();
        assert_eq!(
            (k.layer, k.module, k.expert, k.leaf),
            (11, "attn", "vl", "qkv.weight")
        );
        let k = multiway("encoder.layers.3.ffn.shared.fc1.weight").unwrap();
        assert_eq!(k.expert, "shared");
        assert!(multiway("encoder.layers.3.ffn.fc1.weight").is_none());
        assert!(multiway("encoder.norm.weight").is_none());
    }
}
