//! SynthRS scenes: seeded aerial-looking tiles (textured ground, an optional road and water
//! body) with non-overlapping objects of distinct categories, colours and sizes, rendered with
//! exact masks.

use rand::{Rng, RngExt};

use crate::rle::BinaryMask;

/// Object categories (DIOR-style names, as RRSIS-D uses them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Building,
    Vehicle,
    StorageTank,
    Ship,
    Airplane,
    Tree,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Self::Building,
        Self::Vehicle,
        Self::StorageTank,
        Self::Ship,
        Self::Airplane,
        Self::Tree,
    ];

    /// The noun used in expressions.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Vehicle => "vehicle",
            Self::StorageTank => "storage tank",
            Self::Ship => "ship",
            Self::Airplane => "airplane",
            Self::Tree => "tree",
        }
    }

    /// The COCO category id (1-based, in [`Category::ALL`] order).
    pub fn id(self) -> i64 {
        Self::ALL.iter().position(|&c| c == self).expect("listed") as i64 + 1
    }

    /// The COCO category name (DIOR spelling).
    pub fn coco_name(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Vehicle => "vehicle",
            Self::StorageTank => "storagetank",
            Self::Ship => "ship",
            Self::Airplane => "airplane",
            Self::Tree => "tree",
        }
    }

    /// Colours an object of this category may have. Each category has its own colour family
    /// (only white is shared, by round tanks and cross-shaped airplanes), so a category can be
    /// told apart by colour and shape even through small, untrained encoders; buildings and
    /// vehicles come in two colours each, which colour expressions tell apart.
    fn palette(self) -> &'static [Colour] {
        use Colour::*;
        match self {
            Self::Building => &[Red, Blue],
            Self::Vehicle => &[Yellow, Black],
            Self::StorageTank => &[White],
            Self::Ship => &[Gray],
            Self::Airplane => &[White],
            Self::Tree => &[Green],
        }
    }

    /// Range of the object's longer side as a fraction of the image side.
    fn size_range(self) -> (f32, f32) {
        match self {
            Self::Building => (0.12, 0.26),
            Self::Vehicle => (0.06, 0.10),
            Self::StorageTank => (0.09, 0.18),
            Self::Ship => (0.12, 0.22),
            Self::Airplane => (0.14, 0.24),
            Self::Tree => (0.07, 0.14),
        }
    }
}

/// Named colours of objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Gray,
    White,
    Blue,
    Black,
    Yellow,
    Green,
}

impl Colour {
    pub fn word(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Gray => "gray",
            Self::White => "white",
            Self::Blue => "blue",
            Self::Black => "black",
            Self::Yellow => "yellow",
            Self::Green => "green",
        }
    }

    fn rgb(self) -> [f32; 3] {
        match self {
            Self::Red => [178.0, 52.0, 44.0],
            Self::Gray => [128.0, 128.0, 132.0],
            Self::White => [232.0, 232.0, 228.0],
            Self::Blue => [52.0, 84.0, 170.0],
            Self::Black => [28.0, 28.0, 32.0],
            Self::Yellow => [222.0, 196.0, 48.0],
            Self::Green => [38.0, 96.0, 40.0],
        }
    }
}

/// The shape an object is drawn with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Axis-aligned rectangle of half sizes.
    Rect { hw: f32, hh: f32 },
    /// Ellipse of half axes.
    Ellipse { rx: f32, ry: f32 },
    /// Airplane: fuselage along one axis, wings across it.
    Cross {
        len: f32,
        span: f32,
        thick: f32,
        vertical: bool,
    },
}

/// One object of a scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub category: Category,
    pub colour: Colour,
    /// Centre in pixels.
    pub cx: f32,
    pub cy: f32,
    shape: Shape,
}

impl Object {
    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        match self.shape {
            Shape::Rect { hw, hh } => dx.abs() <= hw && dy.abs() <= hh,
            Shape::Ellipse { rx, ry } => (dx / rx).powi(2) + (dy / ry).powi(2) <= 1.0,
            Shape::Cross {
                len,
                span,
                thick,
                vertical,
            } => {
                let (along, across) = if vertical { (dy, dx) } else { (dx, dy) };
                let fuselage = along.abs() <= len && across.abs() <= thick;
                let wings = across.abs() <= span && (along + 0.15 * len).abs() <= thick * 1.2;
                fuselage || wings
            }
        }
    }

    /// Half extents of the bounding box.
    fn half_extent(&self) -> (f32, f32) {
        match self.shape {
            Shape::Rect { hw, hh } => (hw, hh),
            Shape::Ellipse { rx, ry } => (rx, ry),
            Shape::Cross {
                len,
                span,
                vertical,
                ..
            } => {
                if vertical {
                    (span, len)
                } else {
                    (len, span)
                }
            }
        }
    }
}

/// What lies under the objects: the ground's kind and whether water and a road cross it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ground {
    pub kind: GroundKind,
    pub water: bool,
    pub road: bool,
}

/// The three grounds a scene is drawn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroundKind {
    Grass,
    Soil,
    Concrete,
}

impl GroundKind {
    /// The ground's word in captions.
    pub fn word(self) -> &'static str {
        match self {
            Self::Grass => "grassland",
            Self::Soil => "bare soil",
            Self::Concrete => "urban concrete",
        }
    }
}

/// A rendered scene.
#[derive(Clone, Debug)]
pub struct Scene {
    pub size: usize,
    pub ground: Ground,
    pub objects: Vec<Object>,
    /// RGB, row-major, `size * size * 3`.
    pub pixels: Vec<u8>,
    /// One exact mask per object.
    pub masks: Vec<BinaryMask>,
}

impl Scene {
    /// Foreground area of object `i` in pixels.
    pub fn area(&self, i: usize) -> usize {
        self.masks[i].area()
    }
}

/// Smooth value noise in [0, 1] on a `cells x cells` lattice.
fn value_noise<R: Rng>(rng: &mut R, size: usize, cells: usize) -> Vec<f32> {
    let lattice: Vec<f32> = (0..(cells + 1) * (cells + 1))
        .map(|_| rng.random::<f32>())
        .collect();
    let at = |i: usize, j: usize| lattice[i * (cells + 1) + j];
    let mut out = Vec::with_capacity(size * size);
    for y in 0..size {
        let fy = y as f32 / size as f32 * cells as f32;
        let (iy, ty) = (fy as usize, fy.fract());
        let sy = ty * ty * (3.0 - 2.0 * ty);
        for x in 0..size {
            let fx = x as f32 / size as f32 * cells as f32;
            let (ix, tx) = (fx as usize, fx.fract());
            let sx = tx * tx * (3.0 - 2.0 * tx);
            let top = at(iy, ix) * (1.0 - sx) + at(iy, ix + 1) * sx;
            let bottom = at(iy + 1, ix) * (1.0 - sx) + at(iy + 1, ix + 1) * sx;
            out.push(top * (1.0 - sy) + bottom * sy);
        }
    }
    out
}

/// Draws one scene with `n_objects` objects (fewer if they cannot be placed without overlap),
/// their sizes multiplied by `object_scale`.
pub fn generate<R: Rng>(rng: &mut R, size: usize, n_objects: usize, object_scale: f32) -> Scene {
    let s = size as f32;
    // Ground: grass, soil or urban concrete, with two octaves of value noise.
    let grounds = [
        [86.0, 118.0, 60.0],
        [150.0, 126.0, 92.0],
        [150.0, 150.0, 146.0],
    ];
    let ground_index = rng.random_range(0..grounds.len());
    let ground = grounds[ground_index];
    let kind = [GroundKind::Grass, GroundKind::Soil, GroundKind::Concrete][ground_index];
    let coarse = value_noise(rng, size, 4);
    let fine = value_noise(rng, size, 16);
    let mut rgb: Vec<[f32; 3]> = (0..size * size)
        .map(|i| {
            let n = 0.75 + 0.35 * coarse[i] + 0.15 * fine[i];
            ground.map(|c| c * n)
        })
        .collect();

    // An optional water body (a large disc entering from an edge) and an optional road.
    let water = rng.random_bool(0.5).then(|| {
        let edge = rng.random_range(0..4);
        let (cx, cy) = match edge {
            0 => (rng.random_range(0.2..0.8) * s, -0.1 * s),
            1 => (1.1 * s, rng.random_range(0.2..0.8) * s),
            2 => (rng.random_range(0.2..0.8) * s, 1.1 * s),
            _ => (-0.1 * s, rng.random_range(0.2..0.8) * s),
        };
        (cx, cy, rng.random_range(0.3..0.45) * s)
    });
    let road = rng.random_bool(0.6).then(|| {
        let vertical = rng.random_bool(0.5);
        (
            vertical,
            rng.random_range(0.15..0.85) * s,
            rng.random_range(0.05..0.08) * s,
        )
    });
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let i = y * size + x;
            if let Some((wx, wy, r)) = water
                && (fx - wx).hypot(fy - wy) < r
            {
                let n = 0.85 + 0.3 * fine[i];
                rgb[i] = [36.0 * n, 70.0 * n, 104.0 * n];
            }
            if let Some((vertical, at, half)) = road {
                let d = if vertical { fx - at } else { fy - at };
                if d.abs() < half {
                    let along = if vertical { fy } else { fx };
                    let marking = d.abs() < half * 0.12 && (along / (s * 0.06)) as i32 % 2 == 0;
                    let v = if marking {
                        210.0
                    } else {
                        92.0 + 12.0 * fine[i]
                    };
                    rgb[i] = [v, v, v * 1.02];
                }
            }
        }
    }

    // Objects: distinct positions without overlap (bounding boxes with a margin).
    let mut objects: Vec<Object> = Vec::new();
    let mut attempts = 0;
    while objects.len() < n_objects && attempts < 200 {
        attempts += 1;
        let category = Category::ALL[rng.random_range(0..Category::ALL.len())];
        let palette = category.palette();
        let colour = palette[rng.random_range(0..palette.len())];
        let (lo, hi) = category.size_range();
        let long = rng.random_range(lo..hi) * object_scale * s / 2.0;
        let shape = match category {
            Category::Building => {
                let aspect = rng.random_range(0.5..1.0);
                if rng.random_bool(0.5) {
                    Shape::Rect {
                        hw: long,
                        hh: long * aspect,
                    }
                } else {
                    Shape::Rect {
                        hw: long * aspect,
                        hh: long,
                    }
                }
            }
            Category::Vehicle => {
                if rng.random_bool(0.5) {
                    Shape::Rect {
                        hw: long,
                        hh: long * 0.45,
                    }
                } else {
                    Shape::Rect {
                        hw: long * 0.45,
                        hh: long,
                    }
                }
            }
            Category::StorageTank | Category::Tree => Shape::Ellipse { rx: long, ry: long },
            Category::Ship => {
                if rng.random_bool(0.5) {
                    Shape::Ellipse {
                        rx: long,
                        ry: long * 0.3,
                    }
                } else {
                    Shape::Ellipse {
                        rx: long * 0.3,
                        ry: long,
                    }
                }
            }
            Category::Airplane => Shape::Cross {
                len: long,
                span: long * 0.9,
                thick: (long * 0.18).max(1.0),
                vertical: rng.random_bool(0.5),
            },
        };
        let mut candidate = Object {
            category,
            colour,
            cx: 0.0,
            cy: 0.0,
            shape,
        };
        let (ex, ey) = candidate.half_extent();
        if 2.0 * ex + 2.0 >= s || 2.0 * ey + 2.0 >= s {
            continue;
        }
        candidate.cx = rng.random_range(ex + 1.0..s - ex - 1.0);
        candidate.cy = rng.random_range(ey + 1.0..s - ey - 1.0);
        let margin = 0.03 * s;
        let overlaps = objects.iter().any(|o| {
            let (ox, oy) = o.half_extent();
            (o.cx - candidate.cx).abs() < ox + ex + margin
                && (o.cy - candidate.cy).abs() < oy + ey + margin
        });
        if !overlaps {
            objects.push(candidate);
        }
    }

    // Render objects (a darker outline band for shading) and their exact masks.
    let mut masks = vec![BinaryMask::empty(size, size); objects.len()];
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let i = y * size + x;
            for (k, o) in objects.iter().enumerate() {
                if o.contains(fx, fy) {
                    masks[k].data[i] = true;
                    let inner = o.contains(fx + 1.0, fy) && o.contains(fx, fy + 1.0);
                    let shade = if inner { 0.9 + 0.2 * fine[i] } else { 0.7 };
                    rgb[i] = o.colour.rgb().map(|c| c * shade);
                }
            }
        }
    }
    let pixels = rgb
        .iter()
        .flat_map(|p| p.map(|c| c.round().clamp(0.0, 255.0) as u8))
        .collect();
    Scene {
        size,
        ground: Ground {
            kind,
            water: water.is_some(),
            road: road.is_some(),
        },
        objects,
        pixels,
        masks,
    }
}
