//! JSON strings borrowed from the text they were parsed from: the engine's
//! inputs (request, claims) are read without building a JSON tree.
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// Whether `text` is a JSON object (by its first character). Derived
/// `Deserialize` also accepts an array, field by field in order: for the
/// request and the claims that would be a way to name a role by position.
pub fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// A string, borrowed from the input when it has no escapes (serde copies a
/// `Cow<str>` outside a derived struct, or inside an `Option`). `null` is
/// `None`; with `ANY`, so is any other JSON value that is not a string,
/// without it such a value is refused.
pub struct Text<'a, const ANY: bool = false>(pub Option<Cow<'a, str>>);

impl<const ANY: bool> Default for Text<'_, ANY> {
    fn default() -> Self {
        Text(None)
    }
}

impl<'de: 'a, 'a, const ANY: bool> Deserialize<'de> for Text<'a, ANY> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Str<'a, const ANY: bool>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const ANY: bool> Visitor<'de> for Str<'a, ANY> {
            type Value = Text<'a, ANY>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(if ANY { "a JSON value" } else { "a string" })
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_str(self)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        if ANY {
            deserializer.deserialize_any(Str::<ANY>(std::marker::PhantomData))
        } else {
            // null is absent; anything else but a string is refused.
            deserializer.deserialize_option(Str::<ANY>(std::marker::PhantomData))
        }
    }
}
