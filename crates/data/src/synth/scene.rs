//! Scenes: up to nine objects on a 3×3 grid of cells, one object per cell, the attributes an
//! object has, the predicates every caption, question and statement is evaluated with, and
//! the constrained sampler that builds a scene to order.
//!
//! Geometry (`Layout`): the canvas of `image_size` pixels is cut into 3×3 cells of
//! `cell = image_size / 3` pixels (the grid is centred; `offset` is the unused margin). A large
//! object is `cell - 1` pixels wide and sits in the corner of its cell; a small one is about
//! 0.6 cells wide and is jittered inside its cell. The last row and column of every cell stay
//! empty, so two objects never touch: every object is one connected component of its mask.
//! `Rel`: "a is left of b" when a's centre is more than half a cell left of b's — which holds
//! exactly when a sits in a column further left (and "above" when in a row further up).

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

/// Cells per side of the grid.
pub const GRID: u32 = 3;

/// The shapes, in segmentation class order (class = index + 1; 0 is background).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Square,
    Circle,
    Triangle,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Square, Shape::Circle, Shape::Triangle, Shape::Cross];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Square => "square",
            Shape::Circle => "circle",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Square => "squares",
            Shape::Circle => "circles",
            Shape::Triangle => "triangles",
            Shape::Cross => "crosses",
        }
    }

    /// The class index in segmentation masks (1..=4; 0 is background).
    pub fn class(self) -> u8 {
        self as u8 + 1
    }
}

/// The named colours and the exact RGB value objects are painted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The exact (flat, noise-free) pixel value of an object of this colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 35, 35],
            Colour::Green => [35, 155, 55],
            Colour::Blue => [40, 75, 215],
            Colour::Yellow => [235, 200, 25],
            Colour::Purple => [135, 55, 185],
            Colour::Orange => [245, 130, 25],
        }
    }
}

/// Object size: `Layout::small` or `Layout::large` pixels wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// One object of a scene. `bbox` is `[x, y, width, height]` in pixels and is tight: the shape
/// touches all four sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub bbox: [u32; 4],
}

impl Object {
    /// The centre of the bounding box in half pixels (exact integers).
    pub fn centre2(&self) -> (i64, i64) {
        let [x, y, w, h] = self.bbox.map(i64::from);
        (2 * x + w, 2 * y + h)
    }
}

/// The grid geometry for one image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub image_size: u32,
    /// Cells per side (always `GRID`).
    pub grid: u32,
    /// Cell side in pixels.
    pub cell: u32,
    /// Left and top margin of the grid in pixels.
    pub offset: u32,
    /// Side of a small / a large object in pixels.
    pub small: u32,
    pub large: u32,
}

impl Layout {
    pub fn new(image_size: u32) -> Self {
        let cell = image_size / GRID;
        Self {
            image_size,
            grid: GRID,
            cell,
            offset: (image_size - GRID * cell) / 2,
            small: (cell * 3 + 2) / 5,
            large: cell - 1,
        }
    }

    pub fn side(&self, size: Size) -> u32 {
        match size {
            Size::Small => self.small,
            Size::Large => self.large,
        }
    }

    /// `(row, column)` of the cell holding pixel `(x, y)`.
    pub fn cell_of(&self, x: u32, y: u32) -> (u32, u32) {
        let f = |v: u32| (v.saturating_sub(self.offset) / self.cell).min(self.grid - 1);
        (f(y), f(x))
    }
}

/// Spatial relations between two objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rel {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Rel {
    pub const ALL: [Rel; 4] = [Rel::LeftOf, Rel::RightOf, Rel::Above, Rel::Below];

    pub fn words(self) -> &'static str {
        match self {
            Rel::LeftOf => "left of",
            Rel::RightOf => "right of",
            Rel::Above => "above",
            Rel::Below => "below",
        }
    }

    /// Whether `a` is `self` of `b`: the centres differ by more than half a cell on the axis.
    pub fn holds(self, layout: &Layout, a: &Object, b: &Object) -> bool {
        let ((ax, ay), (bx, by)) = (a.centre2(), b.centre2());
        let m = i64::from(layout.cell);
        match self {
            Rel::LeftOf => bx - ax > m,
            Rel::RightOf => ax - bx > m,
            Rel::Above => by - ay > m,
            Rel::Below => ay - by > m,
        }
    }
}

/// A partial description of an object ("a red shape", "a small circle"): an object matches when
/// every attribute given agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Desc {
    pub shape: Option<Shape>,
    pub colour: Option<Colour>,
    pub size: Option<Size>,
}

/// The attributes of an object before it is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
}

impl Desc {
    pub fn of(o: &Object) -> Self {
        Self {
            shape: Some(o.shape),
            colour: Some(o.colour),
            size: Some(o.size),
        }
    }

    pub fn shape(shape: Shape) -> Self {
        Self {
            shape: Some(shape),
            ..Self::default()
        }
    }

    pub fn colour(colour: Colour) -> Self {
        Self {
            colour: Some(colour),
            ..Self::default()
        }
    }

    pub fn matches(&self, o: &Object) -> bool {
        self.matches_attrs(&Attrs {
            shape: o.shape,
            colour: o.colour,
            size: o.size,
        })
    }

    pub(crate) fn matches_attrs(&self, a: &Attrs) -> bool {
        self.shape.is_none_or(|s| s == a.shape)
            && self.colour.is_none_or(|c| c == a.colour)
            && self.size.is_none_or(|z| z == a.size)
    }

    /// Fills the missing attributes at random.
    pub(crate) fn complete(&self, rng: &mut impl Rng) -> Attrs {
        Attrs {
            shape: self.shape.unwrap_or_else(|| pick(rng, &Shape::ALL)),
            colour: self.colour.unwrap_or_else(|| pick(rng, &Colour::ALL)),
            size: self.size.unwrap_or_else(|| pick(rng, &Size::ALL)),
        }
    }

    /// The same description with one of its given attributes changed (a near miss).
    pub(crate) fn near_miss(&self, rng: &mut impl Rng) -> Desc {
        let mut d = *self;
        let given: Vec<u8> = [
            (0, self.shape.is_some()),
            (1, self.colour.is_some()),
            (2, self.size.is_some()),
        ]
        .into_iter()
        .filter_map(|(i, g)| g.then_some(i))
        .collect();
        match given.choose(rng) {
            Some(0) => d.shape = self.shape.map(|s| other(rng, &Shape::ALL, s)),
            Some(1) => d.colour = self.colour.map(|c| other(rng, &Colour::ALL, c)),
            Some(2) => d.size = self.size.map(|z| other(rng, &Size::ALL, z)),
            _ => {}
        }
        d
    }
}

/// A uniformly chosen element of a non-empty constant list.
pub(crate) fn pick<T: Copy>(rng: &mut impl Rng, all: &[T]) -> T {
    all[rng.random_range(0..all.len())]
}

/// A uniformly chosen element of `all` other than `not`.
pub(crate) fn other<T: Copy + PartialEq>(rng: &mut impl Rng, all: &[T], not: T) -> T {
    let rest: Vec<T> = all.iter().copied().filter(|&v| v != not).collect();
    pick(rng, &rest)
}

/// The objects of one image, in reading order of their cells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scene {
    pub objects: Vec<Object>,
}

impl Scene {
    pub fn count(&self, d: &Desc) -> usize {
        self.objects.iter().filter(|o| d.matches(o)).count()
    }

    /// The one object matching `d`, if exactly one does.
    pub fn unique(&self, d: &Desc) -> Option<&Object> {
        let mut it = self.objects.iter().filter(|o| d.matches(o));
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// Whether distinct objects match the descriptions one to one.
    pub fn distinct(&self, descs: &[Desc]) -> bool {
        fn go(objects: &[Object], used: &mut Vec<usize>, descs: &[Desc]) -> bool {
            let Some((d, rest)) = descs.split_first() else {
                return true;
            };
            for (i, o) in objects.iter().enumerate() {
                if !used.contains(&i) && d.matches(o) {
                    used.push(i);
                    let ok = go(objects, used, rest);
                    used.pop();
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(&self.objects, &mut Vec::new(), descs)
    }

    /// Whether some object matching `a` is `rel` of some other object matching `b`.
    pub fn rel_exists(&self, layout: &Layout, a: &Desc, rel: Rel, b: &Desc) -> bool {
        self.objects.iter().enumerate().any(|(i, x)| {
            a.matches(x)
                && self
                    .objects
                    .iter()
                    .enumerate()
                    .any(|(j, y)| i != j && b.matches(y) && rel.holds(layout, x, y))
        })
    }
}

/// The difficulty knobs the sampler needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    pub min: usize,
    pub max: usize,
    pub distractors: f64,
}

/// What a scene must look like: `required` objects (completed at random), then filler objects
/// up to `n` (or a random count) that match none of `avoid`. A filler is, with probability
/// `Knobs::distractors`, a near miss of one of `focus` (or, without a focus, shares its shape
/// or colour with an object already chosen).
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub n: Option<usize>,
    pub required: Vec<Desc>,
    pub avoid: Vec<Desc>,
    pub focus: Vec<Desc>,
}

/// Samples a scene for `spec`, or `None` when this draw could not satisfy it.
pub(crate) fn sample(
    rng: &mut impl Rng,
    knobs: &Knobs,
    layout: &Layout,
    spec: &Spec,
) -> Option<Scene> {
    let need = spec.required.len();
    let n = match spec.n {
        Some(n) => n,
        None => {
            let lo = knobs.min.max(need);
            if lo > knobs.max {
                return None;
            }
            rng.random_range(lo..=knobs.max)
        }
    };
    let cells = (GRID * GRID) as usize;
    if n < need || n > cells {
        return None;
    }
    let mut attrs: Vec<Attrs> = spec.required.iter().map(|d| d.complete(rng)).collect();
    while attrs.len() < n {
        let mut found = None;
        for _ in 0..64 {
            let a = filler(rng, knobs, spec, &attrs);
            if !spec.avoid.iter().any(|d| d.matches_attrs(&a)) {
                found = Some(a);
                break;
            }
        }
        attrs.push(found?);
    }
    let mut slots: Vec<u32> = (0..GRID * GRID).collect();
    slots.shuffle(rng);
    let mut placed: Vec<(u32, Object)> = attrs
        .iter()
        .zip(slots)
        .map(|(a, slot)| {
            let side = layout.side(a.size);
            let room = layout.cell - 1 - side;
            let (row, col) = (slot / GRID, slot % GRID);
            let x = layout.offset + col * layout.cell + rng.random_range(0..=room);
            let y = layout.offset + row * layout.cell + rng.random_range(0..=room);
            let o = Object {
                shape: a.shape,
                colour: a.colour,
                size: a.size,
                bbox: [x, y, side, side],
            };
            (slot, o)
        })
        .collect();
    placed.sort_by_key(|(slot, _)| *slot);
    Some(Scene {
        objects: placed.into_iter().map(|(_, o)| o).collect(),
    })
}

fn filler(rng: &mut impl Rng, knobs: &Knobs, spec: &Spec, placed: &[Attrs]) -> Attrs {
    if knobs.distractors > 0.0 && rng.random_bool(knobs.distractors) {
        if let Some(f) = spec.focus.choose(rng) {
            return f.near_miss(rng).complete(rng);
        }
        if let Some(p) = placed.choose(rng) {
            let d = if rng.random_bool(0.5) {
                Desc::shape(p.shape)
            } else {
                Desc::colour(p.colour)
            };
            return d.complete(rng);
        }
    }
    Desc::default().complete(rng)
}
