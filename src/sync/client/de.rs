//! Lenient field decoders for WeCom's answers.
//!
//! They read a field the way the service always has: a field of an unexpected JSON type counts as missing
//! instead of failing the whole answer (one odd field must not bury a job), and a list that is not a list is
//! empty. Used with `#[serde(default, deserialize_with = "…")]`, so an absent field is the default too.
//!
//! Lists and nested objects go through a `serde_json::Value` first, only here: one odd element is skipped
//! rather than failing the list, which a streaming decode cannot do.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One JSON value, keeping only what a lenient field needs.
enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Null, a float, an integer beyond i64, an object or an array.
    Other,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A string, or `None` for anything else.
pub(crate) fn opt_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::Str(s) => Some(s),
        _ => None,
    })
}

/// A string, or `""` for anything else (cursors, and the fields an empty string stands in for).
pub(crate) fn str_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_str(d)?.unwrap_or_default())
}

/// An integer that fits i64, or `None` for anything else (floats included).
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Scalar::deserialize(d)? {
        Scalar::Int(i) => Some(i),
        _ => None,
    })
}

/// A boolean, or `false` for anything else.
pub(crate) fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(matches!(Scalar::deserialize(d)?, Scalar::Bool(true)))
}

/// The field's JSON exactly as sent, `null` included (`Some(Value::Null)`, unlike `Option<Value>`): for the
/// fields stored as-is in a JSONB column, where an explicit `null` and an absent field differ.
pub(crate) fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The strings of an array; no array is an empty list, and other elements are skipped.
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(opt_strings(d)?.unwrap_or_default())
}

/// Like [`strings`], but `None` when the field is not an array (a column that tells "not sent" from "none").
pub(crate) fn opt_strings<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    })
}

/// The objects of an array decoded as `T`; no array is an empty list, and elements that are not objects
/// (or not a `T`) are skipped.
pub(crate) fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().filter_map(object).collect(),
        _ => Vec::new(),
    })
}

/// An object decoded as `T`, or `None` for anything else.
pub(crate) fn opt_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(object(Value::deserialize(d)?))
}

fn object<T: DeserializeOwned>(v: Value) -> Option<T> {
    match v {
        // Only objects: serde would read an array into a struct by position.
        Value::Object(_) => T::deserialize(v).ok(),
        _ => None,
    }
}

/// A secret string (`session_key`), or `None` for anything else.
pub(crate) fn opt_secret<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<secrecy::SecretString>, D::Error> {
    Ok(opt_str(d)?.map(secrecy::SecretString::from))
}
