//! From a multiway checkpoint to the modality-agnostic (`shared`) model: which expert keys
//! merge into each shared key. Below the VL layers a part's vision and text experts merge;
//! in the VL layers the vision, text and vision-language experts merge, as in the paper's
//! code. Parts that are already shared, embeddings, LayerScale and the final norm are copied.

use mmerge_core::keys;

use crate::config::Expert;

/// One output key of the shared model and the source keys that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertGroup {
    pub out: String,
    /// (expert, key) pairs; a single `Expert::Shared` entry means a plain copy.
    pub inputs: Vec<(Expert, String)>,
}

/// Groups the keys of a multiway checkpoint (in the given order) into the keys of the shared
/// model. Keys that are not multiway expert keys are copied unchanged.
pub fn expert_groups<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<ExpertGroup> {
    let mut groups: Vec<ExpertGroup> = vec![];
    let mut index = std::collections::HashMap::new();
    for name in names {
        let Some(k) = keys::multiway(name) else {
            groups.push(ExpertGroup {
                out: name.to_string(),
                inputs: vec![(Expert::Shared, name.to_string())],
            });
            continue;
        };
        let expert = Expert::from_name(k.expert).unwrap_or(Expert::Shared);
        let prefix_end = name.len() - k.leaf.len() - k.expert.len() - 1;
        let out = format!("{}shared.{}", &name[..prefix_end], k.leaf);
        match index.get(&out) {
            Some(&g) => {
                let group: &mut ExpertGroup = &mut groups[g];
                group.inputs.push((expert, name.to_string()));
                group.inputs.sort();
            }
            None => {
                index.insert(out.clone(), groups.len());
                groups.push(ExpertGroup {
                    out,
                    inputs: vec![(expert, name.to_string())],
                });
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_merge_into_shared_keys() {
        let names = [
            "embeddings.word.weight",
            "encoder.layers.0.attn.vision.q.weight",
            "encoder.layers.0.attn.text.q.weight",
            "encoder.layers.0.ffn.shared.fc1.weight",
            "encoder.layers.1.attn.vl.q.weight",
            "encoder.layers.1.attn.vision.q.weight",
            "encoder.layers.1.attn.text.q.weight",
        ];
        let g = expert_groups(names);
        assert_eq!(g.len(), 4);
        assert_eq!(
            g[0].inputs,
            [(Expert::Shared, "embeddings.word.weight".to_string())]
        );
        assert_eq!(g[1].out, "encoder.layers.0.attn.shared.q.weight");
        assert_eq!(
            g[1].inputs.iter().map(|i| i.0).collect::<Vec<_>>(),
            [Expert::Vision, Expert::Text]
        );
        assert_eq!(g[2].out, "encoder.layers.0.ffn.shared.fc1.weight");
        assert_eq!(g[2].inputs.len(), 1);
        assert_eq!(g[3].out, "encoder.layers.1.attn.shared.q.weight");
        assert_eq!(
            g[3].inputs.iter().map(|i| i.0).collect::<Vec<_>>(),
            [Expert::Vision, Expert::Text, Expert::Vl]
        );
    }
}
