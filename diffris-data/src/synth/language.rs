//! SynthRS referring expressions: a small grammar (category, colour, size, absolute position,
//! relation to another object), the predicate each form means, and a parser that reads the
//! generated text back, so tests can check that every expression picks exactly one object.

use rand::{Rng, RngExt};

use super::scene::{Category, Colour, Scene};

/// Where an object lies in the 3x3 grid of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    TopLeft,
    Top,
    TopRight,
    Left,
    Center,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Position {
    const ALL: [Position; 9] = [
        Self::TopLeft,
        Self::Top,
        Self::TopRight,
        Self::Left,
        Self::Center,
        Self::Right,
        Self::BottomLeft,
        Self::Bottom,
        Self::BottomRight,
    ];

    pub fn words(self) -> &'static str {
        match self {
            Self::TopLeft => "top left",
            Self::Top => "top",
            Self::TopRight => "top right",
            Self::Left => "left",
            Self::Center => "center",
            Self::Right => "right",
            Self::BottomLeft => "bottom left",
            Self::Bottom => "bottom",
            Self::BottomRight => "bottom right",
        }
    }

    /// The grid cell of a point in an image of side `size`.
    pub fn of(cx: f32, cy: f32, size: usize) -> Self {
        let cell = |v: f32| ((v / size as f32 * 3.0) as usize).min(2);
        Self::ALL[cell(cy) * 3 + cell(cx)]
    }
}

/// A spatial relation between the target and a reference object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

impl Relation {
    const ALL: [Relation; 4] = [Self::LeftOf, Self::RightOf, Self::Above, Self::Below];

    fn words(self) -> &'static str {
        match self {
            Self::LeftOf => "to the left of",
            Self::RightOf => "to the right of",
            Self::Above => "above",
            Self::Below => "below",
        }
    }

    /// Whether `a` stands in this relation to `b`: its centre is beyond `b`'s by at least
    /// `margin` pixels along the relation's axis.
    fn holds(self, scene: &Scene, a: usize, b: usize, margin: f32) -> bool {
        let (oa, ob) = (&scene.objects[a], &scene.objects[b]);
        match self {
            Self::LeftOf => oa.cx < ob.cx - margin,
            Self::RightOf => oa.cx > ob.cx + margin,
            Self::Above => oa.cy < ob.cy - margin,
            Self::Below => oa.cy > ob.cy + margin,
        }
    }
}

/// Small or large, relative to the other objects of the same category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeWord {
    Small,
    Large,
}

/// A noun phrase that may single out an object.
#[derive(Clone, Debug, PartialEq)]
pub enum Description {
    /// "the ship"
    Category(Category),
    /// "the red building"
    Coloured(Colour, Category),
    /// "the large storage tank"
    Sized(SizeWord, Category),
    /// "the vehicle at the top left"
    Placed(Category, Position),
    /// "the tree to the left of the white airplane"
    Related(Category, Relation, Box<Description>),
}

/// A size word holds when the object is at least this many times larger (or smaller) than
/// every other object of its category.
const SIZE_RATIO: f32 = 1.5;

impl Description {
    /// Whether object `i` of `scene` fits the description.
    pub fn matches(&self, scene: &Scene, i: usize) -> bool {
        let o = &scene.objects[i];
        match self {
            Self::Category(c) => o.category == *c,
            Self::Coloured(col, c) => o.category == *c && o.colour == *col,
            Self::Sized(word, c) => {
                o.category == *c && {
                    let area = scene.area(i) as f32;
                    let mut others = (0..scene.objects.len())
                        .filter(|&j| j != i && scene.objects[j].category == *c)
                        .map(|j| scene.area(j) as f32)
                        .peekable();
                    others.peek().is_some()
                        && others.all(|a| match word {
                            SizeWord::Large => area >= SIZE_RATIO * a,
                            SizeWord::Small => a >= SIZE_RATIO * area,
                        })
                }
            }
            Self::Placed(c, p) => o.category == *c && Position::of(o.cx, o.cy, scene.size) == *p,
            Self::Related(c, rel, reference) => {
                o.category == *c && {
                    let refs = reference.matching(scene);
                    let margin = 0.05 * scene.size as f32;
                    refs.len() == 1 && refs[0] != i && rel.holds(scene, i, refs[0], margin)
                }
            }
        }
    }

    /// Indices of every object that fits.
    pub fn matching(&self, scene: &Scene) -> Vec<usize> {
        (0..scene.objects.len())
            .filter(|&i| self.matches(scene, i))
            .collect()
    }

    /// The expression text, e.g. "the red building".
    pub fn text(&self) -> String {
        format!("the {}", self.phrase())
    }

    fn phrase(&self) -> String {
        match self {
            Self::Category(c) => c.noun().to_string(),
            Self::Coloured(col, c) => format!("{} {}", col.word(), c.noun()),
            Self::Sized(w, c) => {
                let w = if *w == SizeWord::Large {
                    "large"
                } else {
                    "small"
                };
                format!("{w} {}", c.noun())
            }
            Self::Placed(c, p) => format!("{} at the {}", c.noun(), p.words()),
            Self::Related(c, rel, reference) => {
                format!("{} {} {}", c.noun(), rel.words(), reference.text())
            }
        }
    }

    /// Parses text made by [`Description::text`].
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("the ")?;
        for rel in Relation::ALL {
            let sep = format!(" {} ", rel.words());
            if let Some((head, tail)) = rest.split_once(&sep) {
                let Self::Category(c) = Self::parse(&format!("the {head}"))? else {
                    return None;
                };
                return Some(Self::Related(c, rel, Box::new(Self::parse(tail)?)));
            }
        }
        if let Some((head, pos)) = rest.split_once(" at the ") {
            let c = parse_category(head)?;
            let p = Position::ALL.into_iter().find(|p| p.words() == pos)?;
            return Some(Self::Placed(c, p));
        }
        if let Some(c) = parse_category(rest) {
            return Some(Self::Category(c));
        }
        let (first, noun) = rest.split_once(' ')?;
        let c = parse_category(noun)?;
        match first {
            "large" => Some(Self::Sized(SizeWord::Large, c)),
            "small" => Some(Self::Sized(SizeWord::Small, c)),
            w => {
                let col = [
                    Colour::Red,
                    Colour::Gray,
                    Colour::White,
                    Colour::Blue,
                    Colour::Black,
                    Colour::Yellow,
                    Colour::Green,
                ]
                .into_iter()
                .find(|col| col.word() == w)?;
                Some(Self::Coloured(col, c))
            }
        }
    }
}

fn parse_category(noun: &str) -> Option<Category> {
    Category::ALL.into_iter().find(|c| c.noun() == noun)
}

/// Every description of object `i` that picks it and nothing else.
pub fn unique_descriptions(scene: &Scene, i: usize) -> Vec<Description> {
    let o = &scene.objects[i];
    let c = o.category;
    let mut simple = vec![
        Description::Category(c),
        Description::Coloured(o.colour, c),
        Description::Sized(SizeWord::Large, c),
        Description::Sized(SizeWord::Small, c),
        Description::Placed(c, Position::of(o.cx, o.cy, scene.size)),
    ];
    simple.retain(|d| d.matching(scene) == [i]);
    let mut out = simple;
    // Relations to another object that has a simple unique description.
    for j in (0..scene.objects.len()).filter(|&j| j != i) {
        let reference = [
            Description::Category(scene.objects[j].category),
            Description::Coloured(scene.objects[j].colour, scene.objects[j].category),
        ]
        .into_iter()
        .find(|d| d.matching(scene) == [j]);
        if let Some(reference) = reference {
            for rel in Relation::ALL {
                let d = Description::Related(c, rel, Box::new(reference.clone()));
                if d.matching(scene) == [i] {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Picks up to `n` distinct unique descriptions of object `i`, preferring varied forms.
pub fn choose_descriptions<R: Rng>(
    rng: &mut R,
    scene: &Scene,
    i: usize,
    n: usize,
) -> Vec<Description> {
    let mut all = unique_descriptions(scene, i);
    let mut chosen = Vec::new();
    while chosen.len() < n && !all.is_empty() {
        let k = rng.random_range(0..all.len());
        chosen.push(all.swap_remove(k));
    }
    chosen
}
