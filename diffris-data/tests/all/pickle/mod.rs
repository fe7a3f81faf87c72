//! Building Python pickle values for RRSIS-D `refs(unc).p` files in tests.

use serde_pickle::{HashableValue, Value};

/// A pickled dict with string keys.
pub fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (HashableValue::String(k.into()), v))
            .collect(),
    )
}
