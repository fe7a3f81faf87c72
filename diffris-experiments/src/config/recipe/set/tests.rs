use super::*;
use crate::config::recipe::RecipeSpec;
use diffris_model::decoder::{DecoderConfig, Temperature};

fn set(s: &str) -> FieldSet {
    s.parse().unwrap()
}

fn pcmrd(r: &RecipeSpec) -> &diffris_model::decoder::PcmrdConfig {
    match &r.model.decoder {
        DecoderConfig::Pcmrd(p) => p,
        other => panic!("not PCMRD: {other:?}"),
    }
}

#[test]
fn a_nested_field_through_the_decoder_variant() {
    let base = RecipeSpec::default();
    let r = apply_sets(&base, &[set("model.decoder.hidden=32")]).unwrap();
    assert_eq!(pcmrd(&r).hidden, 32);
    // Everything else as it was: the same recipe with only that width changed.
    let mut want = base.clone();
    if let DecoderConfig::Pcmrd(p) = &mut want.model.decoder {
        p.hidden = 32;
    }
    assert_eq!(r, want);
    // Naming the variant in the path reaches the same field.
    let named = apply_sets(&base, &[set("model.decoder.pcmrd.hidden=32")]).unwrap();
    assert_eq!(named, want);
    // A field the written recipe leaves out at its default, two levels down.
    let r = apply_sets(&base, &[set("model.decoder.oaqil.dropout=0.1")]).unwrap();
    assert_eq!(pcmrd(&r).oaqil.dropout, 0.1);
    assert_eq!(
        pcmrd(&r).oaqil.token_std,
        1.0,
        "the layout's other fields keep defaults"
    );
}

#[test]
fn enum_variants_strings_and_several_settings_in_order() {
    let base = RecipeSpec::default();
    let r = apply_sets(
        &base,
        &[
            set("model.decoder.temperature=clamped_cgformer"),
            set("test_split=val"),
            set("train.lr=1e-4"),
            set("train.lr=2e-4"),
        ],
    )
    .unwrap();
    assert_eq!(pcmrd(&r).temperature, Temperature::ClampedCgformer);
    assert_eq!(r.test_split, "val", "a string field takes bare text");
    assert_eq!(r.train.lr, 2e-4, "the later setting wins");
    // Another decoder, whole, then one of its fields.
    let r = apply_sets(
        &base,
        &[set("model.decoder=lmp(())"), set("model.decoder.hidden=64")],
    )
    .unwrap();
    match &r.model.decoder {
        DecoderConfig::Lmp(l) => assert_eq!(l.hidden, 64),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wrong_type_names_the_setting_and_the_expected_kind() {
    let base = RecipeSpec::default();
    let err = apply_sets(&base, &[set("model.decoder.hidden=wide")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--set model.decoder.hidden=wide"), "{err}");
    assert!(
        err.contains("`model.decoder.hidden` does not take this value"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("integer"),
        "names the expected type: {err}"
    );
    let err = apply_sets(&base, &[set("model.decoder.temperature=warm")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("learned") && err.contains("clamped_cgformer"),
        "{err}"
    );
    let err = apply_sets(&base, &[set("train.lr=fast")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.lr"), "{err}");
}

#[test]
fn an_unknown_path_is_an_error_naming_it() {
    let base = RecipeSpec::default();
    let err = apply_sets(&base, &[set("model.decoder.widht=32")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.decoder.widht"), "{err}");
    assert!(
        err.contains("is not a field") && err.contains("hidden"),
        "lists the fields: {err}"
    );
    // Through a value that has no fields.
    let err = apply_sets(&base, &[set("train.lr.base=1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`train.lr` is the value"), "{err}");
    // Not a path at all.
    assert!(
        "train.lr"
            .parse::<FieldSet>()
            .unwrap_err()
            .contains("no `=`")
    );
    assert!("train..lr=1".parse::<FieldSet>().is_err());
    assert!(
        "train.lr="
            .parse::<FieldSet>()
            .unwrap_err()
            .contains("no value")
    );
}
