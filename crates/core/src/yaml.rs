//! Where a node of a YAML document is: [`locate`] walks the document along a path of keys
//! and indices and returns the 1-based line the YAML parser reports for that node, so that a
//! check made after parsing (a value out of range, a name not registered) can name the line,
//! as serde's own errors do. The one home of this helper: merge configs, training recipes and
//! experiment files use it.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a YAML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The 1-based line of the node at `path` in the YAML `text`, as the YAML parser reports it:
/// for a path ending in a key, the key's line. `None` when the path is not in the document.
pub fn locate(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    match Find(path).deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The message by which [`Find`] stops at its target (the parser adds the position).
const FOUND: &str = "mmerge: located";

/// Walks a document along a path and fails, with [`FOUND`], at its last step, so that the
/// parser's error carries the position of that node.
struct Find<'p>(&'p [Seg<'p>]);

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Find<'_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let want = match self.0.first() {
            None => return Err(de::Error::custom(FOUND)),
            Some(Seg::Index(i)) => Some(*i),
            Some(Seg::Key(_)) => None,
        };
        let mut i = 0;
        loop {
            let more = if Some(i) == want {
                seq.next_element_seed(Find(&self.0[1..]))?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let want = match self.0.first() {
            None => return Err(de::Error::custom(FOUND)),
            Some(Seg::Key(k)) => Some(*k),
            Some(Seg::Index(_)) => None,
        };
        let last = self.0.len() == 1;
        while let Some(hit) = map.next_key_seed(FindKey { want, last })? {
            if hit {
                map.next_value_seed(Find(&self.0[1..]))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A mapping key: `true` when it is the wanted one; fails with [`FOUND`] (at the key's
/// position) when the wanted key is the path's last step.
struct FindKey<'p> {
    want: Option<&'p str>,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for FindKey<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<bool, E> {
        let hit = self.want == Some(k);
        if hit && self.last {
            return Err(E::custom(FOUND));
        }
        Ok(hit)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}
