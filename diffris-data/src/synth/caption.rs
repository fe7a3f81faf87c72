//! Captions of SynthRS scenes, the text side of generative pre-training on them: the ground
//! (and whether water and a road cross it), then every object with its size, colour, category
//! and place in the image, and, from the second on, where it lies relative to the object named
//! before it, tersely (without articles, so that six objects fit CLIP's 75 tokens). For example:
//! "aerial image of grassland with water and a road: large red building at top left; small
//! white ship at center, right of building; green tree at bottom, below ship".

use super::language::Position;
use super::scene::Scene;

/// Below this share of the image an object is "small"; above [`LARGE`] "large" (in between it
/// gets no size word). SynthRS objects at `object_scale` 1 cover about 0.5% to 6% of a tile.
pub const SMALL: f32 = 0.012;
pub const LARGE: f32 = 0.03;

/// The caption of `scene` (see the module documentation).
pub fn caption(scene: &Scene) -> String {
    let g = scene.ground;
    let mut text = format!("aerial image of {}", g.kind.word());
    match (g.water, g.road) {
        (true, true) => text.push_str(" with water and a road"),
        (true, false) => text.push_str(" with water"),
        (false, true) => text.push_str(" with a road"),
        (false, false) => {}
    }
    let phrases: Vec<String> = (0..scene.objects.len())
        .map(|i| object_phrase(scene, i))
        .collect();
    if !phrases.is_empty() {
        text.push_str(": ");
        text.push_str(&phrases.join("; "));
    }
    text
}

/// The size word of object `i` ("small", "large" or none) by its share of the image.
pub fn size_word(scene: &Scene, i: usize) -> Option<&'static str> {
    let share = scene.area(i) as f32 / (scene.size * scene.size) as f32;
    if share < SMALL {
        Some("small")
    } else if share > LARGE {
        Some("large")
    } else {
        None
    }
}

/// Where object `i` lies relative to object `j`, along the axis on which their centres are
/// further apart ("left of", "right of", "above", "below").
pub fn relation(scene: &Scene, i: usize, j: usize) -> &'static str {
    let (a, b) = (&scene.objects[i], &scene.objects[j]);
    let (dx, dy) = (a.cx - b.cx, a.cy - b.cy);
    if dx.abs() >= dy.abs() {
        if dx < 0.0 { "left of" } else { "right of" }
    } else if dy < 0.0 {
        "above"
    } else {
        "below"
    }
}

fn object_phrase(scene: &Scene, i: usize) -> String {
    let o = &scene.objects[i];
    let mut words: Vec<&str> = size_word(scene, i).into_iter().collect();
    words.push(o.colour.word());
    words.push(o.category.noun());
    let place = Position::of(o.cx, o.cy, scene.size).words();
    let mut phrase = format!("{} at {place}", words.join(" "));
    if i > 0 {
        let previous = scene.objects[i - 1].category.noun();
        phrase.push_str(&format!(", {} {previous}", relation(scene, i, i - 1)));
    }
    phrase
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::super::scene::generate;
    use super::*;
    use crate::ClipTokenizer;

    #[test]
    fn a_caption_names_every_object_its_place_and_its_relation_to_the_one_before() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let mut longest = 0;
        for _ in 0..300 {
            let scene = generate(&mut rng, 64, 6, 1.0);
            let text = caption(&scene);
            let (head, list) = text.split_once(": ").unwrap_or((&text, ""));
            assert!(
                head.starts_with("aerial image of ") && head.contains(scene.ground.kind.word())
            );
            assert_eq!(head.contains("water"), scene.ground.water, "{text}");
            assert_eq!(head.contains("road"), scene.ground.road, "{text}");
            let phrases: Vec<&str> = if list.is_empty() {
                vec![]
            } else {
                list.split("; ").collect()
            };
            assert_eq!(phrases.len(), scene.objects.len(), "{text}");
            for (i, (p, o)) in phrases.iter().zip(&scene.objects).enumerate() {
                let named = format!("{} {}", o.colour.word(), o.category.noun());
                assert!(p.contains(&named), "{p} lacks {named}");
                let place = Position::of(o.cx, o.cy, scene.size).words();
                assert!(p.contains(&format!(" at {place}")), "{p}");
                // The relation, where there is one, is true of the two centres.
                if i > 0 {
                    let b = &scene.objects[i - 1];
                    let holds = if p.contains("left of") {
                        o.cx <= b.cx
                    } else if p.contains("right of") {
                        o.cx >= b.cx
                    } else if p.contains("above") {
                        o.cy <= b.cy
                    } else {
                        assert!(p.contains("below"), "{p}");
                        o.cy >= b.cy
                    };
                    assert!(holds, "{p}");
                }
            }
            let tokens = tokenizer.encode(&text).unwrap();
            longest = longest.max(tokens.eos_index - 1);
            // Every caption fits CLIP's 75 tokens: nothing the image shows is cut off.
            assert!(!tokens.truncated, "{} tokens: {text}", tokens.eos_index - 1);
        }
        assert!(
            longest > 40,
            "the captions are long enough to say something: {longest}"
        );
    }

    #[test]
    fn size_words_follow_the_objects_share_of_the_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut small, mut large, mut neither) = (0, 0, 0);
        for _ in 0..100 {
            let scene = generate(&mut rng, 64, 5, 1.0);
            for i in 0..scene.objects.len() {
                let share = scene.area(i) as f32 / (64 * 64) as f32;
                match size_word(&scene, i) {
                    Some("small") => (assert!(share < SMALL), small += 1),
                    Some("large") => (assert!(share > LARGE), large += 1),
                    None => (assert!((SMALL..=LARGE).contains(&share)), neither += 1),
                    Some(w) => panic!("{w}"),
                };
            }
        }
        // The thresholds split SynthRS's objects into three groups, none of them empty.
        assert!(
            small > 20 && large > 20 && neither > 20,
            "{small} {large} {neither}"
        );
    }
}
