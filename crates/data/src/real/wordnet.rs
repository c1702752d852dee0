//! WordNet 3.0 glosses from Debian `wordnet-base`: `<sources>/wordnet/data.{noun,verb,adj,adv}`.
//!
//! A data line (wndb(5WN)) is `offset lex_filenum ss_type w_cnt word lex_id ... | gloss`; lines
//! that start with two spaces are the licence header. Field 2, the lexicographer file number,
//! names the synset's supersense through the fixed lexnames(5WN) table below (the package
//! ships the table only as that manual page). The gloss is the text after the first `|`
//! (definition and quoted examples), trimmed.

use std::path::Path;

use crate::error::{DataError, Result, io};

/// lexnames(5WN): supersense by lexicographer file number (WordNet 3.0; 45 entries).
pub const LEXNAMES: [&str; 45] = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
];

/// The data files, in the order they are read.
pub const FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];

/// One synset line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synset {
    /// Byte offset of the line in its file: the synset's id within its part of speech.
    pub offset: u64,
    /// Lexicographer file number, an index into [`LEXNAMES`].
    pub lex_filenum: usize,
    /// `n`, `v`, `a`, `s` (adjective satellite) or `r`.
    pub ss_type: char,
    /// The first word (underscores for spaces, as in the file).
    pub lemma: String,
    /// The gloss: everything after the first `|`, trimmed.
    pub gloss: String,
}

impl Synset {
    /// The supersense name, e.g. `noun.animal`.
    pub fn supersense(&self) -> &'static str {
        LEXNAMES[self.lex_filenum]
    }
}

/// Parses one line of a `data.*` file. `Ok(None)` for the licence header (lines that start
/// with a space) and empty lines.
pub fn parse_line(line: &str) -> std::result::Result<Option<Synset>, String> {
    if line.is_empty() || line.starts_with(' ') {
        return Ok(None);
    }
    let (fields, gloss) = line
        .split_once('|')
        .ok_or_else(|| "no `|` before the gloss".to_string())?;
    let mut f = fields.split_ascii_whitespace();
    let mut next = |what: &str| f.next().ok_or_else(|| format!("missing {what}"));
    let offset = next("synset_offset")?;
    let lex = next("lex_filenum")?;
    let ss = next("ss_type")?;
    let _w_cnt = next("w_cnt")?;
    let lemma = next("word")?;
    let offset: u64 = offset
        .parse()
        .map_err(|_| format!("synset_offset `{offset}` is not a number"))?;
    let lex_filenum: usize = lex
        .parse()
        .ok()
        .filter(|&n: &usize| n < LEXNAMES.len())
        .ok_or_else(|| format!("lex_filenum `{lex}` is not in 00..45"))?;
    let ss_type = match ss {
        "n" | "v" | "a" | "s" | "r" => ss.chars().next().unwrap_or('n'),
        _ => return Err(format!("ss_type `{ss}` is not one of n v a s r")),
    };
    let gloss = gloss.trim().to_string();
    if gloss.is_empty() {
        return Err("empty gloss".into());
    }
    Ok(Some(Synset {
        offset,
        lex_filenum,
        ss_type,
        lemma: lemma.to_string(),
        gloss,
    }))
}

/// One gloss with its stable key (`<file pos letter><offset:08>`, e.g. `n00001740`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gloss {
    pub key: String,
    pub synset: Synset,
}

/// Reads the four data files.
pub fn load(dir: &Path) -> Result<Vec<Gloss>> {
    let mut out = Vec::new();
    for file in FILES {
        let path = dir.join(file);
        let bytes = io(&path, std::fs::read(&path))?;
        // The files are ASCII; be lenient with anything else.
        let text = String::from_utf8_lossy(&bytes);
        let pos = &file[5..6];
        for (i, line) in text.lines().enumerate() {
            let s = parse_line(line).map_err(|reason| DataError::BadRecord {
                path: path.clone(),
                record: format!("line {}", i + 1),
                reason,
            })?;
            if let Some(synset) = s {
                out.push(Gloss {
                    key: format!("{pos}{:08}", synset.offset),
                    synset,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_noun_and_an_adjective() {
        let noun = "00001930 03 n 01 physical_entity 0 007 @ 00001740 n 0000 ~ 00002452 n 0000 | an entity that has physical existence  ";
        let s = parse_line(noun).unwrap().unwrap();
        assert_eq!(
            s,
            Synset {
                offset: 1930,
                lex_filenum: 3,
                ss_type: 'n',
                lemma: "physical_entity".into(),
                gloss: "an entity that has physical existence".into(),
            }
        );
        assert_eq!(s.supersense(), "noun.Tops");
        let adj = "00002312 00 a 02 abaxial 0 dorsal 4 002 ;c 06037666 n 0000 ! 00002527 a 0101 | facing away from the axis of an organ or organism; \"the abaxial surface of a leaf is the underside\"  ";
        let s = parse_line(adj).unwrap().unwrap();
        assert_eq!(s.supersense(), "adj.all");
        assert_eq!(s.lemma, "abaxial");
        assert_eq!(
            s.gloss,
            "facing away from the axis of an organ or organism; \"the abaxial surface of a leaf is the underside\""
        );
        let verb = "01795351 37 v 01 fume 0 001 @ 01771553 v 0000 02 + 02 00 + 22 00 | be mad, angry, or furious  ";
        assert_eq!(
            parse_line(verb).unwrap().unwrap().supersense(),
            "verb.emotion"
        );
    }

    #[test]
    fn skips_the_licence_and_rejects_bad_lines() {
        assert_eq!(
            parse_line("  1 This software and database is being provided"),
            Ok(None)
        );
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(
            parse_line("00001930 45 n 01 x 0 000 | gloss"),
            Err("lex_filenum `45` is not in 00..45".into())
        );
        assert_eq!(
            parse_line("00001930 03 n 01 x 0 000"),
            Err("no `|` before the gloss".into())
        );
        assert_eq!(
            parse_line("00001930 03 q 01 x 0 000 | g"),
            Err("ss_type `q` is not one of n v a s r".into())
        );
    }
}
