//! The language of the suite: what captions, questions and statements mean (`Claim`,
//! `Question`, `Statement`), how each is evaluated on scenes, and how each is worded. Every
//! text the generator writes is produced here from its meaning, and kept only when the meaning
//! evaluates to the intended truth on the rendered scene.

use super::scene::{Colour, Desc, Layout, Rel, Scene, Shape};

const NUMBERS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// The English word for `n` (digits above nine).
pub fn number_word(n: usize) -> String {
    NUMBERS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_string())
}

/// "small red circle", "red shape", "circle"; `head` replaces "shape" when no shape is given.
fn noun_with(d: &Desc, head: &'static str) -> String {
    let mut words = Vec::with_capacity(3);
    if let Some(z) = d.size {
        words.push(z.name());
    }
    if let Some(c) = d.colour {
        words.push(c.name());
    }
    words.push(d.shape.map_or(head, Shape::name));
    words.join(" ")
}

fn noun(d: &Desc) -> String {
    noun_with(d, "shape")
}

/// "small red circles", "red shapes".
fn plural(d: &Desc) -> String {
    let mut words = Vec::with_capacity(3);
    if let Some(z) = d.size {
        words.push(z.name());
    }
    if let Some(c) = d.colour {
        words.push(c.name());
    }
    words.push(d.shape.map_or("shapes", Shape::plural));
    words.join(" ")
}

/// The phrase with its indefinite article ("a red circle", "an orange square").
fn indef(phrase: &str) -> String {
    let article = if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {phrase}")
}

fn count_phrase(n: usize, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("there is one {singular}")
    } else {
        format!("there are {} {plural}", number_word(n))
    }
}

/// What a caption says. Descriptions are existential ("a red circle": at least one red circle);
/// counts are exact ("there are two red shapes": exactly two).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Claim {
    /// "a small red circle" / "there is a small red circle".
    Exists { d: Desc, there: bool },
    /// "a red circle and a blue square" / "a, b and c": distinct objects, one per description.
    And(Vec<Desc>),
    /// "a red circle left of a blue square" (`long`: "to the left of").
    Rel {
        a: Desc,
        rel: Rel,
        b: Desc,
        long: bool,
    },
    /// "there are three shapes".
    CountAll(usize),
    /// "there are two red shapes" / "there is one circle" (`d` gives a colour or a shape).
    CountOf(Desc, usize),
}

impl Claim {
    pub fn text(&self) -> String {
        match self {
            Claim::Exists { d, there } => {
                let np = indef(&noun(d));
                if *there { format!("there is {np}") } else { np }
            }
            Claim::And(ds) => {
                let nps: Vec<String> = ds.iter().map(|d| indef(&noun(d))).collect();
                match nps.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} and {last}", rest.join(", "))
                    }
                    Some((last, _)) => last.clone(),
                    None => String::new(),
                }
            }
            Claim::Rel { a, rel, b, long } => {
                let words = match (rel, long) {
                    (Rel::LeftOf, true) => "to the left of",
                    (Rel::RightOf, true) => "to the right of",
                    _ => rel.words(),
                };
                format!("{} {words} {}", indef(&noun(a)), indef(&noun(b)))
            }
            Claim::CountAll(n) => count_phrase(*n, "shape", "shapes"),
            Claim::CountOf(d, n) => count_phrase(*n, &noun(d), &plural(d)),
        }
    }

    pub fn holds(&self, layout: &Layout, scene: &Scene) -> bool {
        match self {
            Claim::Exists { d, .. } => scene.count(d) > 0,
            Claim::And(ds) => scene.distinct(ds),
            Claim::Rel { a, rel, b, .. } => scene.rel_exists(layout, a, *rel, b),
            Claim::CountAll(n) => scene.objects.len() == *n,
            Claim::CountOf(d, n) => scene.count(d) == *n,
        }
    }
}

/// A VQA question. Definite descriptions ("the circle") presuppose exactly one match.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Question {
    /// "what colour is the [size] circle?" → colour.
    Colour(Desc),
    /// "what shape is the [size] red object?" → shape.
    Shape(Desc),
    /// "how many shapes are there?" → number.
    CountAll,
    /// "how many red shapes are there?" / "how many circles are there?" → number.
    CountOf(Desc),
    /// "is there a [size] red circle?" → yes/no.
    Exists(Desc),
    /// "is the red circle left of the blue square?" → yes/no.
    Rel(Desc, Rel, Desc),
}

impl Question {
    pub fn text(&self) -> String {
        match self {
            Question::Colour(d) => format!("what colour is the {}?", noun(d)),
            Question::Shape(d) => format!("what shape is the {}?", noun_with(d, "object")),
            Question::CountAll => "how many shapes are there?".to_string(),
            Question::CountOf(d) => format!("how many {} are there?", plural(d)),
            Question::Exists(d) => format!("is there {}?", indef(&noun(d))),
            Question::Rel(a, r, b) => format!("is the {} {} the {}?", noun(a), r.words(), noun(b)),
        }
    }

    /// VQA v2 `question_type` (the question's opening words).
    pub fn question_type(&self) -> &'static str {
        match self {
            Question::Colour(_) => "what colour is the",
            Question::Shape(_) => "what shape is the",
            Question::CountAll | Question::CountOf(_) => "how many",
            Question::Exists(_) => "is there a",
            Question::Rel(..) => "is the",
        }
    }

    /// VQA v2 `answer_type`.
    pub fn answer_type(&self) -> &'static str {
        match self {
            Question::Colour(_) | Question::Shape(_) => "other",
            Question::CountAll | Question::CountOf(_) => "number",
            Question::Exists(_) | Question::Rel(..) => "yes/no",
        }
    }

    /// The answer on `scene`, or `None` when a definite description does not pick out exactly
    /// one object.
    pub fn answer(&self, layout: &Layout, scene: &Scene) -> Option<String> {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        match self {
            Question::Colour(d) => scene.unique(d).map(|o| o.colour.name().to_string()),
            Question::Shape(d) => scene.unique(d).map(|o| o.shape.name().to_string()),
            Question::CountAll => Some(scene.objects.len().to_string()),
            Question::CountOf(d) => Some(scene.count(d).to_string()),
            Question::Exists(d) => Some(yes_no(scene.count(d) > 0)),
            Question::Rel(a, r, b) => {
                let (x, y) = (scene.unique(a)?, scene.unique(b)?);
                Some(yes_no(r.holds(layout, x, y)))
            }
        }
    }
}

/// An NLVR2-style statement about a (left, right) pair of images.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    Both(Desc),
    Left(Desc),
    Right(Desc),
    LeftCount(usize),
    RightCount(usize),
    More,
    Same,
    ExactlyOne(Desc),
    Total(Shape, usize),
}

impl Statement {
    /// The template's name (what the statement-template prior groups by).
    pub fn template(&self) -> &'static str {
        match self {
            Statement::Both(_) => "both_contain",
            Statement::Left(_) => "left_contains",
            Statement::Right(_) => "right_contains",
            Statement::LeftCount(_) => "left_count",
            Statement::RightCount(_) => "right_count",
            Statement::More => "left_more",
            Statement::Same => "same_count",
            Statement::ExactlyOne(_) => "exactly_one_contains",
            Statement::Total(..) => "total_shape_count",
        }
    }

    pub fn text(&self) -> String {
        let has = |side: &str, n: usize| {
            if n == 1 {
                format!("the {side} image has one shape")
            } else {
                format!("the {side} image has {} shapes", number_word(n))
            }
        };
        match self {
            Statement::Both(d) => format!("both images contain {}", indef(&noun(d))),
            Statement::Left(d) => format!("the left image contains {}", indef(&noun(d))),
            Statement::Right(d) => format!("the right image contains {}", indef(&noun(d))),
            Statement::LeftCount(n) => has("left", *n),
            Statement::RightCount(n) => has("right", *n),
            Statement::More => "the left image has more shapes than the right image".to_string(),
            Statement::Same => "both images have the same number of shapes".to_string(),
            Statement::ExactlyOne(d) => format!("exactly one image contains {}", indef(&noun(d))),
            Statement::Total(s, n) => {
                format!("{} in total", count_phrase(*n, s.name(), s.plural()))
            }
        }
    }

    pub fn holds(&self, left: &Scene, right: &Scene) -> bool {
        let has = |s: &Scene, d: &Desc| s.count(d) > 0;
        match self {
            Statement::Both(d) => has(left, d) && has(right, d),
            Statement::Left(d) => has(left, d),
            Statement::Right(d) => has(right, d),
            Statement::LeftCount(n) => left.objects.len() == *n,
            Statement::RightCount(n) => right.objects.len() == *n,
            Statement::More => left.objects.len() > right.objects.len(),
            Statement::Same => left.objects.len() == right.objects.len(),
            Statement::ExactlyOne(d) => has(left, d) != has(right, d),
            Statement::Total(s, n) => {
                left.count(&Desc::shape(*s)) + right.count(&Desc::shape(*s)) == *n
            }
        }
    }
}

/// The colour of the first object a claim mentions, if that mention gives one.
pub(crate) fn first_colour(c: &Claim) -> Option<Colour> {
    match c {
        Claim::Exists { d, .. } | Claim::CountOf(d, _) | Claim::Rel { a: d, .. } => d.colour,
        Claim::And(ds) => ds.first().and_then(|d| d.colour),
        Claim::CountAll(_) => None,
    }
}
