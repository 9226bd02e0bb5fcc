//! The `Prefer` header (RFC 7240) as PostgREST reads it. Pure.
use crate::error::RestError;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Return {
    #[default]
    Minimal,
    HeadersOnly,
    Representation,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Count {
    Exact,
    Planned,
    Estimated,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    pub return_: Option<Return>,
    pub count: Option<Count>,
    pub resolution: Option<Resolution>,
    pub missing_default: bool,
    pub strict: bool,
    pub max_affected: Option<i64>,
    /// `pagination=keyset`: answer with a cursor for the next page.
    pub keyset: bool,
    /// `tx=rollback` (true) or `tx=commit` (false); honoured only where
    /// `fluxbase.tx_end` allows an override.
    pub tx_rollback: Option<bool>,
    /// The preferences honoured, echoed in `Preference-Applied`.
    pub applied: Vec<String>,
}

impl Preferences {
    pub fn parse(header: Option<&str>) -> Result<Preferences, RestError> {
        let mut p = Preferences::default();
        let mut unknown = Vec::new();
        for raw in header.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let mut recognised = true;
            match raw {
                "return=minimal" => p.return_ = Some(Return::Minimal),
                "return=headers-only" => p.return_ = Some(Return::HeadersOnly),
                "return=representation" => p.return_ = Some(Return::Representation),
                "count=exact" => p.count = Some(Count::Exact),
                "count=planned" => p.count = Some(Count::Planned),
                "count=estimated" => p.count = Some(Count::Estimated),
                "resolution=merge-duplicates" => p.resolution = Some(Resolution::MergeDuplicates),
                "resolution=ignore-duplicates" => p.resolution = Some(Resolution::IgnoreDuplicates),
                "missing=default" => p.missing_default = true,
                "missing=null" => p.missing_default = false,
                "handling=strict" => p.strict = true,
                "handling=lenient" => p.strict = false,
                "pagination=keyset" => p.keyset = true,
                "tx=commit" => p.tx_rollback = Some(false),
                "tx=rollback" => p.tx_rollback = Some(true),
                other => match other.strip_prefix("max-affected=").map(str::parse::<i64>) {
                    Some(Ok(n)) if n >= 0 => p.max_affected = Some(n),
                    _ => {
                        recognised = false;
                        unknown.push(other.to_string());
                    }
                },
            }
            // tx= is echoed only when the server allows it (see rest::run).
            if recognised && !raw.starts_with("handling=") && !raw.starts_with("tx=") {
                p.applied.push(raw.to_string());
            }
        }
        if p.strict && !unknown.is_empty() {
            return Err(RestError::InvalidPreferences(unknown));
        }
        if p.strict {
            p.applied.push("handling=strict".into());
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supabase_js_preferences() {
        let p = Preferences::parse(Some("return=representation,count=exact, resolution=merge-duplicates")).unwrap();
        assert_eq!(p.return_, Some(Return::Representation));
        assert_eq!(p.count, Some(Count::Exact));
        assert_eq!(p.resolution, Some(Resolution::MergeDuplicates));
        assert_eq!(p.applied.len(), 3);
    }

    #[test]
    fn strict_handling_refuses_unknown_preferences() {
        assert!(Preferences::parse(Some("handling=lenient, frobnicate")).is_ok());
        assert!(matches!(
            Preferences::parse(Some("handling=strict, frobnicate")),
            Err(RestError::InvalidPreferences(_))
        ));
        assert_eq!(Preferences::parse(Some("max-affected=5")).unwrap().max_affected, Some(5));
    }
}
