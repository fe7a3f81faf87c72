//! `--set path.to.field=value`: any recipe field from the command line (mmseg's
//! `--cfg-options`, detectron2's `KEY VALUE` pairs), typed and validated as a file's field.
//!
//! The path names struct fields from the recipe's top (`model.decoder.hidden`, `train.lr`,
//! `test_split`). An enum variant that holds a struct is passed through: `model.decoder.hidden`
//! reaches the width of whichever decoder the recipe has (`model.decoder.pcmrd.hidden` names the
//! variant too, and then requires it). The value is RON, merged over the field as a variant's
//! `set:` is ([`super::merge`]): `32`, `true`, `clamped_cgformer`, `lmp(())`, `(layers: 3)`; a
//! string field also takes its text unquoted (`test_split=val`). Each setting is applied and
//! the recipe read back before the next, so an error names the setting, its path and what the
//! field expects; a run's `config.ron` records the values it used.

use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::merge::Node;

/// One `--set PATH=VALUE`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSet {
    /// The field names from the recipe's top.
    pub path: Vec<String>,
    /// The value as written (RON, or a string field's bare text).
    pub value: String,
}

impl FieldSet {
    /// The path as written (`model.decoder.hidden`).
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

impl std::fmt::Display for FieldSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--set {}={}", self.dotted(), self.value)
    }
}

impl FromStr for FieldSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (path, value) = s.split_once('=').ok_or_else(|| {
            format!("`{s}` has no `=`: write PATH=VALUE, e.g. model.decoder.hidden=32")
        })?;
        let path: Vec<String> = path
            .trim()
            .split('.')
            .map(|p| p.trim().to_string())
            .collect();
        if let Some(bad) = path
            .iter()
            .find(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "`{s}`: `{bad}` is not a field name (a path is field names joined by dots, \
                 e.g. train.lr)"
            ));
        }
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("`{s}` has no value after `=`"));
        }
        Ok(Self { path, value })
    }
}

/// What went wrong with a setting: its path leads through a value that has no fields.
fn not_a_struct(set: &FieldSet, depth: usize, found: &Node) -> String {
    let at = set.path[..depth].join(".");
    format!(
        "{set}: `{at}` is the value `{}`, which has no field `{}`",
        found.to_ron(),
        set.path[depth]
    )
}

/// A struct holding `value` at `path` (the fields a file would write to reach it).
fn nested(path: &[String], value: Node) -> Node {
    match path.split_first() {
        None => value,
        Some((first, rest)) => Node::Struct {
            name: None,
            fields: vec![(first.clone(), nested(rest, value))],
        },
    }
}

/// The value of `set` as RON, quoted when the field holds a string and it is bare text.
fn value_node(set: &FieldSet, current: Option<&Node>) -> Result<Node, String> {
    let is_string = matches!(current, Some(Node::Atom(a)) if a.starts_with('"'));
    let text = if is_string && !set.value.starts_with('"') {
        format!("{:?}", set.value)
    } else {
        set.value.clone()
    };
    Node::parse(&text).map_err(|e| format!("{set}: the value is not RON ({e})"))
}

/// `node` with `set` applied from field `depth` of its path on.
fn apply(node: Node, set: &FieldSet, depth: usize) -> Result<Node, String> {
    if depth == set.path.len() {
        let value = value_node(set, Some(&node))?;
        return Ok(node.merged(&value));
    }
    let key = &set.path[depth];
    match node {
        Node::Struct { name, mut fields } => {
            match fields.iter().position(|(k, _)| k == key) {
                Some(i) => {
                    let old = std::mem::replace(&mut fields[i].1, Node::Atom(String::new()));
                    fields[i].1 = apply(old, set, depth + 1)?;
                }
                // A field the written recipe leaves out (at its default): written here, and
                // checked by the recipe's own reader (an unknown name is an error there).
                None => {
                    let value = value_node(set, None)?;
                    fields.push((key.clone(), nested(&set.path[depth + 1..], value)));
                }
            }
            Ok(Node::Struct { name, fields })
        }
        // An enum variant holding one struct (`pcmrd((..))`), or `Some(..)`: its name may be
        // the next field of the path; otherwise the path goes on inside it.
        Node::Tuple { name, mut items } if items.len() == 1 => {
            let named = name.as_deref() == Some(key.as_str());
            let inner = items.pop().expect("one item");
            let inner = apply(inner, set, if named { depth + 1 } else { depth })?;
            Ok(Node::Tuple {
                name,
                items: vec![inner],
            })
        }
        other => Err(not_a_struct(set, depth, &other)),
    }
}

/// `recipe` with each of `sets` applied in turn and read back as `T`; the error names the
/// setting and why its value does not fit.
pub fn apply_sets<T: Serialize + DeserializeOwned + Clone>(
    recipe: &T,
    sets: &[FieldSet],
) -> anyhow::Result<T> {
    let mut current = ron::to_string(recipe)?;
    let mut out = recipe.clone();
    for set in sets {
        let node = Node::parse(&current).map_err(|e| anyhow::anyhow!("the recipe as RON: {e}"))?;
        let node = apply(node, set, 0).map_err(anyhow::Error::msg)?;
        let text = node.to_ron();
        let value: T = super::ron_options().from_str(&text).map_err(|e| {
            let what = match e.code {
                ron::Error::NoSuchStructField { .. } => "is not a field",
                _ => "does not take this value",
            };
            anyhow::anyhow!("{set}: `{}` {what}: {}", set.dotted(), e.code)
        })?;
        current = ron::to_string(&value)?;
        out = value;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
