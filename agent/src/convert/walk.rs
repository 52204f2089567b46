//! Reading the Envoy document: every mapping's keys are checked off as the
//! converter reads them, so a key nothing read is refused by name rather
//! than dropped. Values are read through [`Cx`], which records what cannot
//! be carried over and goes on, so one run lists every problem.

use serde_yaml::Value;

use super::refusals;
use crate::config::{ConfigDuration, DocPath};

/// One node of the Envoy document and where it is.
#[derive(Clone)]
pub(super) struct Field<'v> {
    pub path: DocPath,
    pub value: &'v Value,
}

impl<'v> Field<'v> {
    pub fn new(path: DocPath, value: &'v Value) -> Self {
        Self { path, value }
    }
}

/// What the walk found besides the config: refusals (nothing is written
/// when there is one), notes (carried over, but the user should know), and
/// where each weir listener and cluster came from, for the loader's errors.
#[derive(Default)]
pub(super) struct Cx {
    pub refusals: Vec<(DocPath, String)>,
    pub notes: Vec<(DocPath, String)>,
    pub origins: Vec<(String, DocPath)>,
}

impl Cx {
    pub fn refuse(&mut self, path: &DocPath, why: impl Into<String>) {
        self.refusals.push((path.clone(), why.into()));
    }

    pub fn note(&mut self, path: &DocPath, what: impl Into<String>) {
        self.notes.push((path.clone(), what.into()));
    }

    /// Records that the weir node at `weir_path` was made from `envoy`.
    pub fn origin(&mut self, weir_path: String, envoy: &DocPath) {
        self.origins.push((weir_path, envoy.clone()));
    }

    pub fn obj<'v>(&mut self, f: &Field<'v>, message: &'static str) -> Option<Obj<'v>> {
        Obj::new(self, f, message)
    }

    pub fn str<'v>(&mut self, f: &Field<'v>) -> Option<&'v str> {
        match f.value {
            Value::String(s) => Some(s),
            other => {
                self.refuse(&f.path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub fn string(&mut self, f: &Field<'_>) -> Option<String> {
        self.str(f).map(str::to_owned)
    }

    pub fn bool(&mut self, f: &Field<'_>) -> Option<bool> {
        match f.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.refuse(
                    &f.path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A protobuf integer: a YAML number, or a string of digits (the JSON
    /// mapping writes 64-bit integers as strings).
    pub fn u64(&mut self, f: &Field<'_>) -> Option<u64> {
        let parsed = match f.value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.refuse(
                &f.path,
                format!("expected a non-negative integer, found {}", render(f.value)),
            );
        }
        parsed
    }

    pub fn u32(&mut self, f: &Field<'_>) -> Option<u32> {
        let n = self.u64(f)?;
        let fits = u32::try_from(n).ok();
        if fits.is_none() {
            self.refuse(&f.path, format!("{n} is too large (at most {})", u32::MAX));
        }
        fits
    }

    pub fn u16(&mut self, f: &Field<'_>) -> Option<u16> {
        let n = self.u64(f)?;
        let fits = u16::try_from(n).ok();
        if fits.is_none() {
            self.refuse(&f.path, format!("{n} is too large (at most {})", u16::MAX));
        }
        fits
    }

    /// A `google.protobuf.Duration`: Envoy's `"0.25s"`, or `{seconds, nanos}`.
    pub fn duration(&mut self, f: &Field<'_>) -> Option<ConfigDuration> {
        let parsed = match f.value {
            Value::String(s) => parse_envoy_duration(s),
            Value::Mapping(_) => self.duration_object(f),
            _ => Err(()),
        };
        match parsed {
            Ok(d) => Some(ConfigDuration(d)),
            Err(()) => {
                self.refuse(
                    &f.path,
                    format!(
                        "invalid duration {}: expected seconds with an `s` suffix, e.g. \"0.25s\", or {{seconds, nanos}}",
                        render(f.value)
                    ),
                );
                None
            }
        }
    }

    fn duration_object(&mut self, f: &Field<'_>) -> Result<std::time::Duration, ()> {
        let mut o = self.obj(f, "Duration").ok_or(())?;
        let seconds = o.get("seconds").map(|s| self.u64(&s));
        let nanos = o.get("nanos").map(|n| self.u32(&n));
        o.finish(self);
        let seconds = seconds.unwrap_or(Some(0)).ok_or(())?;
        let nanos = nanos.unwrap_or(Some(0)).ok_or(())?;
        if nanos >= 1_000_000_000 {
            return Err(());
        }
        Ok(std::time::Duration::new(seconds, nanos))
    }

    pub fn seq<'v>(&mut self, f: &Field<'v>) -> Vec<Field<'v>> {
        match f.value {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Field::new(f.path.index(i), v))
                .collect(),
            other => {
                self.refuse(&f.path, format!("expected a list, found {}", kind(other)));
                Vec::new()
            }
        }
    }

    pub fn strings(&mut self, f: &Field<'_>) -> Vec<String> {
        self.seq(f)
            .iter()
            .filter_map(|item| self.string(item))
            .collect()
    }

    /// One of `names` (Envoy's enum value names), mapped to weir's value.
    pub fn choice<T: Copy>(
        &mut self,
        f: &Field<'_>,
        names: &[(&str, T)],
        what_weir_has: &str,
    ) -> Option<T> {
        let text = self.str(f)?;
        let found = names.iter().find(|(n, _)| *n == text).map(|(_, v)| *v);
        if found.is_none() {
            self.refuse(
                &f.path,
                format!("{text:?} is not supported: {what_weir_has}"),
            );
        }
        found
    }
}

/// An optional field read with a `Cx` reader: `Some(None)` when absent,
/// `None` when present but refused.
pub(super) fn optional<T>(read: Option<Option<T>>) -> Option<Option<T>> {
    match read {
        None => Some(None),
        Some(value) => value.map(Some),
    }
}

/// Envoy's duration text: decimal seconds with an `s` suffix (protobuf's
/// JSON form), which weir's own parser reads once the form is checked.
fn parse_envoy_duration(text: &str) -> Result<std::time::Duration, ()> {
    let number = text.strip_suffix('s').ok_or(())?;
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || number.ends_with('.') {
        return Err(());
    }
    crate::config::parse_duration(text).map_err(|_| ())
}

/// A mapping of the Envoy document, its keys checked off as they are read.
pub(super) struct Obj<'v> {
    pub path: DocPath,
    /// Envoy's message name, for the reasons of refusals.
    message: &'static str,
    entries: Vec<Entry<'v>>,
}

struct Entry<'v> {
    key: &'v str,
    value: &'v Value,
    read: bool,
}

impl<'v> Obj<'v> {
    fn new(cx: &mut Cx, f: &Field<'v>, message: &'static str) -> Option<Self> {
        let Value::Mapping(map) = f.value else {
            cx.refuse(
                &f.path,
                format!("expected a mapping ({message}), found {}", kind(f.value)),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map {
            match key {
                Value::String(key) => entries.push(Entry {
                    key,
                    value,
                    read: false,
                }),
                other => cx.refuse(
                    &f.path,
                    format!("mapping key {} is not a field name", render(other)),
                ),
            }
        }
        Some(Self {
            path: f.path.clone(),
            message,
            entries,
        })
    }

    /// The field `name`, written in snake_case or, as protobuf's JSON
    /// mapping also allows, lowerCamelCase; checked off as read. A null
    /// (`field:` with nothing after it) is an unset field, as in protobuf's
    /// JSON mapping.
    pub fn get(&mut self, name: &str) -> Option<Field<'v>> {
        let camel = lower_camel(name);
        let entry = self
            .entries
            .iter_mut()
            .find(|e| !e.read && (e.key == name || e.key == camel))?;
        entry.read = true;
        if entry.value.is_null() {
            return None;
        }
        Some(Field::new(self.path.key(entry.key), entry.value))
    }

    /// Whether `name` is present and not read yet, without reading it (so
    /// [`finish`](Self::finish) still refuses it with its reason).
    pub fn has(&self, name: &str) -> bool {
        let camel = lower_camel(name);
        self.entries
            .iter()
            .any(|e| !e.read && (e.key == name || e.key == camel))
    }

    /// Like [`get`](Self::get), refusing the mapping when the field is absent.
    pub fn require(&mut self, cx: &mut Cx, name: &str) -> Option<Field<'v>> {
        let found = self.get(name);
        if found.is_none() {
            cx.refuse(&self.path, format!("{name} is required"));
        }
        found
    }

    /// The keys nothing has read, now counted as read: for a mapping whose
    /// keys are names (a map of extensions), refused by the caller.
    pub fn unread_keys(&mut self) -> Vec<String> {
        self.entries
            .iter_mut()
            .filter(|e| !e.read)
            .map(|e| {
                e.read = true;
                e.key.to_owned()
            })
            .collect()
    }

    /// Fields read and deliberately left out: no effect on weir's traffic.
    pub fn skip(&mut self, names: &[&str]) {
        for name in names {
            while self.get(name).is_some() {}
        }
    }

    /// Refuses every field nothing read, each with its reason.
    pub fn finish(self, cx: &mut Cx) {
        for entry in self.entries.into_iter().filter(|e| !e.read) {
            let why = refusals::why(self.message, &snake(entry.key));
            cx.refuse(&self.path.key(entry.key), why);
        }
    }
}

/// The message a `typed_config` names in its `@type`, without the URL's
/// `type.googleapis.com/` part; read without checking the key off.
pub(super) fn type_name<'v>(config: Option<&Field<'v>>) -> Option<&'v str> {
    let Value::Mapping(map) = config?.value else {
        return None;
    };
    let url = map.get("@type")?.as_str()?;
    Some(url.rsplit('/').next().unwrap_or(url))
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A short rendering of a scalar for messages.
pub(super) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn durations_in_envoy_forms() {
        let mut cx = Cx::default();
        let at = DocPath::root().key("t");
        let read = |cx: &mut Cx, yaml: &str| cx.duration(&Field::new(at.clone(), &field(yaml)));
        assert_eq!(
            read(&mut cx, "0.25s"),
            Some(ConfigDuration::from_millis(250))
        );
        assert_eq!(read(&mut cx, "5s"), Some(ConfigDuration::from_secs(5)));
        assert_eq!(
            read(&mut cx, "{seconds: 1, nanos: 500000000}"),
            Some(ConfigDuration::from_millis(1500))
        );
        assert_eq!(
            read(&mut cx, "{seconds: \"2\"}"),
            Some(ConfigDuration::from_secs(2))
        );
        assert!(cx.refusals.is_empty(), "{:?}", cx.refusals);
        for bad in [
            "250ms",
            "1m",
            "-1s",
            "s",
            ".5s",
            "1.s",
            "5",
            "{nanos: 1000000000}",
        ] {
            let mut cx = Cx::default();
            assert_eq!(read(&mut cx, bad), None, "{bad}");
            assert_eq!(cx.refusals.len(), 1, "{bad}: {:?}", cx.refusals);
        }
        let mut cx = Cx::default();
        read(&mut cx, "250ms");
        assert_eq!(
            cx.refusals[0].1,
            "invalid duration \"250ms\": expected seconds with an `s` suffix, e.g. \"0.25s\", or {seconds, nanos}"
        );
    }

    #[test]
    fn fields_in_snake_or_camel_case_and_unread_ones_refused() {
        let doc = field("{stat_prefix: a, codecType: AUTO, bogus_field: 1}");
        let mut cx = Cx::default();
        let f = Field::new(DocPath::root().key("hcm"), &doc);
        let mut o = cx.obj(&f, "HttpConnectionManager").unwrap();
        assert!(o.get("stat_prefix").is_some());
        assert!(o.get("stat_prefix").is_none(), "read once");
        let codec = o.get("codec_type").unwrap();
        assert_eq!(codec.path.to_string(), "hcm.codecType");
        o.finish(&mut cx);
        assert_eq!(cx.refusals.len(), 1);
        assert_eq!(cx.refusals[0].0.to_string(), "hcm.bogus_field");
    }

    #[test]
    fn a_null_field_is_unset_and_not_refused() {
        let doc = field("access_log: ~\nhttp2_protocol_options:\n");
        let mut cx = Cx::default();
        let f = Field::new(DocPath::root().key("hcm"), &doc);
        let mut o = cx.obj(&f, "HttpConnectionManager").unwrap();
        assert!(o.get("http2_protocol_options").is_none());
        assert!(o.has("access_log"));
        o.finish(&mut cx);
        assert_eq!(
            cx.refusals.len(),
            1,
            "a null field nothing reads is still refused"
        );
    }
}
